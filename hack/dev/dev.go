package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeopencode/share/internal/testenv"
	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

const (
	demoNamespace = "demo"
	demoAgent     = "team-agent"
	developer     = "developer"
	viewer        = "viewer"
)

// The values of --node.
const (
	nodeAuto    = "auto"
	nodeReal    = "real"
	nodeStandin = "stand-in"
)

// realNodeNeeds is what a machine needs, besides root on Linux, for a real
// node: the tools testenv.CheckRealNodeHost checks, and the static busybox
// of the demo Agent's image (hack/build-images.sh).
const realNodeNeeds = "Debian's runc, iproute2, iptables, containernetworking-plugins and busybox-static (.ci/run installs them)"

// Options configure the development environment.
type Options struct {
	// StateDir holds the control plane's state, the built binaries, logs and
	// kubeconfigs. It is git-ignored.
	StateDir string
	// SharePort is the share listener's port on 127.0.0.1.
	SharePort int
	// BinDir, when set, holds the project's commands already built (make
	// build puts them in bin/); empty builds them into StateDir.
	BinDir string
	// Node is where the demo Agent runs: "real" in a real container on a
	// real node (kubelet, containerd, kube-proxy; root and Linux with the
	// tools testenv.CheckRealNodeHost names), "stand-in" on the stand-in
	// node, whose terminal is a shell on this machine, and "auto" on the
	// real node where this machine allows one, else on the stand-in.
	Node string
	// Root is the repository.
	Root string

	// realNode is Node resolved by Complete; standinReason is why "auto"
	// resolved to the stand-in.
	realNode      bool
	standinReason error

	out io.Writer
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{StateDir: "_output/dev", SharePort: 8480, Node: nodeAuto, out: os.Stdout}
}

// AddFlags registers the flags on fs.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.StateDir, "state-dir", o.StateDir, "Folder for the control plane's state, binaries, logs and kubeconfigs.")
	fs.IntVar(&o.SharePort, "share-port", o.SharePort, "Port of the share listener on 127.0.0.1; 0 picks a free one.")
	fs.StringVar(&o.BinDir, "bin-dir", o.BinDir, "Folder of the built aggregated-apiserver, controller and kubeoc, as make build leaves them. Empty builds them.")
	fs.StringVar(&o.Node, "node", o.Node, "Where the demo Agent runs: real (a busybox container on a real node: kubelet, containerd, kube-proxy; root and Linux with runc, iproute2, iptables and the CNI plugins), stand-in (the stand-in node, whose terminal is a shell on this machine), or auto (real where this machine allows it, else stand-in, saying why).")
}

// Complete resolves --node=auto from what this machine allows.
func (o *Options) Complete() error {
	switch o.Node {
	case nodeReal:
		o.realNode = true
	case nodeAuto:
		o.standinReason = realNodeHost()
		o.realNode = o.standinReason == nil
	}
	return nil
}

// realNodeHost says why this machine cannot run the demo Agent on a real
// node, or nil.
func realNodeHost() error {
	if err := testenv.CheckRealNodeHost(); err != nil {
		return err
	}
	return testenv.CheckStaticBusybox()
}

// Validate checks the flags.
func (o *Options) Validate() error {
	switch o.Node {
	case nodeAuto, nodeStandin:
	case nodeReal:
		if err := realNodeHost(); err != nil {
			return fmt.Errorf("--node=real: %w (a real node needs root on Linux and %s)", err, realNodeNeeds)
		}
	default:
		return fmt.Errorf("--node=%q: want %s, %s or %s", o.Node, nodeAuto, nodeReal, nodeStandin)
	}
	if o.SharePort < 0 || o.SharePort > 65535 {
		return fmt.Errorf("--share-port=%d: want a port, or 0 for a free one", o.SharePort)
	}
	return nil
}

// realNodeErr adds, to an error of the real node that --node=auto chose,
// how to run without one.
func (o *Options) realNodeErr(err error) error {
	if o.Node == nodeAuto {
		return fmt.Errorf("%w\n(--node=auto chose the real node, as this machine allows one; make dev DEV_FLAGS=--node=stand-in runs the stand-in instead)", err)
	}
	return err
}

// env is a running development environment.
type env struct {
	o        *Options
	cp       *testenv.ControlPlane
	admin    client.Client
	binDir   string
	logDir   string
	children []*testenv.Process
}

func (o *Options) step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, ">>> "+format+"\n", args...)
}

// Run starts everything, prints the link and waits until ctx ends.
func (o *Options) Run(ctx context.Context) error {
	root, err := testenv.RepoRoot()
	if err != nil {
		return err
	}
	o.Root = root
	if !filepath.IsAbs(o.StateDir) {
		o.StateDir = filepath.Join(root, o.StateDir)
	}
	e := &env{o: o, binDir: filepath.Join(o.StateDir, "bin"), logDir: filepath.Join(o.StateDir, "logs")}
	defer e.stop()
	for _, dir := range []string{e.binDir, e.logDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}

	// Which node, first: what follows takes longer on a real node, and
	// the link's terminal is a different thing on each.
	switch {
	case o.realNode:
		o.step("the demo Agent runs in a busybox container on a real node (kubelet, containerd and kube-proxy on this machine): the link's terminal is a shell in that container (--node=stand-in runs the stand-in instead)")
	case o.standinReason != nil:
		o.step("the demo Agent runs on the stand-in node: the link's terminal is a shell on this machine, run as you, not a container; no real node because %v (as root on Linux with %s, make dev runs the Agent in a container on a real node)", o.standinReason, realNodeNeeds)
	default:
		o.step("the demo Agent runs on the stand-in node (--node=%s): the link's terminal is a shell on this machine, run as you, not a container", o.Node)
	}

	if o.BinDir != "" {
		if !filepath.IsAbs(o.BinDir) {
			o.BinDir = filepath.Join(root, o.BinDir)
		}
		e.binDir = o.BinDir
		o.step("using aggregated-apiserver, controller and kubeoc from %s", e.binDir)
	} else {
		o.step("building aggregated-apiserver, controller and kubeoc")
		build := exec.CommandContext(ctx, "go", "build", "-o", e.binDir+"/", "./cmd/aggregated-apiserver", "./cmd/controller", "./cmd/kubeoc")
		build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building: %w", err)
		}
	}
	cpBin, err := e.buildControlPlane(ctx)
	if err != nil {
		return err
	}

	cpDir := filepath.Join(o.StateDir, "controlplane")
	_ = os.RemoveAll(cpDir)
	cpOpts := testenv.Options{Dir: cpDir, BinDir: cpBin}
	if o.realNode {
		o.step("building the image archives for the real node (hack/build-images.sh)")
		images := filepath.Join(o.StateDir, "images")
		build := exec.CommandContext(ctx, filepath.Join(root, "hack", "build-images.sh"), images)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return o.realNodeErr(fmt.Errorf("building the image archives: %w", err))
		}
		cpOpts.RealNode = true
		cpOpts.NodeImages = []string{filepath.Join(images, "pause.tar"), filepath.Join(images, "agent.tar")}
		o.step("starting etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the real node %s: kubelet, containerd, kube-proxy (logs in %s; another process's real node on this machine is waited for)", testenv.RealNodeName, cpDir)
	} else {
		o.step("starting etcd, kube-apiserver, kube-controller-manager and kube-scheduler (logs in %s)", cpDir)
	}
	if e.cp, err = testenv.Start(ctx, cpOpts); err != nil {
		if o.realNode {
			return o.realNodeErr(err)
		}
		return err
	}
	if !o.realNode {
		o.step("registering the stand-in node")
		if _, err := e.cp.StartStandinNode(ctx, "dev-node"); err != nil {
			return err
		}
	}
	scheme := clientscheme.Scheme
	if e.admin, err = client.New(e.cp.Config(), client.Options{Scheme: scheme}); err != nil {
		return err
	}

	o.step("installing the Agent CRD and RBAC")
	if err := e.cp.InstallProject(ctx, root); err != nil {
		return err
	}

	shareAddr, err := freeAddr(o.SharePort)
	if err != nil {
		return fmt.Errorf("share port %d: %w", o.SharePort, err)
	}
	publicURL := "http://" + shareAddr

	o.step("starting the controller")
	c, err := testenv.StartController(e.cp, testenv.ServerOptions{
		Bin: filepath.Join(e.binDir, "controller"), Dir: o.StateDir, LogDir: e.logDir, PublicURL: publicURL,
	})
	if err != nil {
		return err
	}
	e.children = append(e.children, c)

	o.step("starting the aggregated API server and the share listener on %s", publicURL)
	server, err := testenv.StartAggregatedAPIServer(ctx, e.cp, testenv.ServerOptions{
		Bin: filepath.Join(e.binDir, "aggregated-apiserver"), Dir: o.StateDir, LogDir: e.logDir,
		ShareAddr: shareAddr, PublicURL: publicURL, Args: []string{"--max-share-duration=168h"},
	})
	if err != nil {
		return err
	}
	e.children = append(e.children, server.Process)

	o.step("creating the demo Agent %s/%s and waiting for it to be ready", demoNamespace, demoAgent)
	userKubeconfig, err := e.developerKubeconfig(ctx)
	if err != nil {
		return err
	}
	viewerKubeconfig, err := e.userKubeconfig(ctx, viewer, "view", "viewer.kubeconfig")
	if err != nil {
		return err
	}
	if err := e.demoAgent(ctx); err != nil {
		return err
	}

	o.step("enabling its share link with kubeoc")
	kubeoc := exec.CommandContext(ctx, filepath.Join(e.binDir, "kubeoc"), "--kubeconfig", userKubeconfig, "agent", "share", demoAgent)
	kubeocOut, err := kubeoc.Output()
	if err != nil {
		return fmt.Errorf("kubeoc agent share: %w\n%s", err, kubeocOut)
	}
	url := regexp.MustCompile(`(?m)^URL:\s+(\S+)$`).FindSubmatch(kubeocOut)
	if url == nil {
		return fmt.Errorf("kubeoc printed no URL:\n%s", kubeocOut)
	}

	fmt.Fprintf(o.out, "\n%s\n", kubeocOut)
	fmt.Fprintf(o.out, "Share link: %s\n", url[1])
	fmt.Fprintf(o.out, "%s\n\n", e.terminalIs(ctx))
	fmt.Fprintf(o.out, "Use the cluster as the developer of namespace %s:\n", demoNamespace)
	fmt.Fprintf(o.out, "  export KUBECONFIG=%s\n", userKubeconfig)
	fmt.Fprintf(o.out, "  %s agent list\n", filepath.Join(e.binDir, "kubeoc"))
	fmt.Fprintf(o.out, "  %s agent share %s --rotate\n", filepath.Join(e.binDir, "kubeoc"), demoAgent)
	fmt.Fprintf(o.out, "As a user who may only view namespace %s (sees the Agent, never its token):\n", demoNamespace)
	fmt.Fprintf(o.out, "  export KUBECONFIG=%s\n", viewerKubeconfig)
	fmt.Fprintf(o.out, "  %s agent share %s --show    # forbidden\n", filepath.Join(e.binDir, "kubeoc"), demoAgent)
	fmt.Fprintf(o.out, "Cluster admin: export KUBECONFIG=%s\n", e.cp.KubeconfigPath())
	stops := "Press Ctrl-C to stop everything."
	if o.realNode {
		stops = "Press Ctrl-C to stop everything and remove the real node."
	}
	fmt.Fprintf(o.out, "Logs: %s\n\n%s\n", e.logDir, stops)

	select {
	case <-ctx.Done():
	case err := <-e.exited():
		return err
	}
	o.step("stopping")
	return nil
}

// buildControlPlane builds, or finds up to date, the control plane and,
// for a real node, the node's programs, in the folder testenv runs them
// from, and returns that folder.
func (e *env) buildControlPlane(ctx context.Context) (string, error) {
	if e.o.realNode {
		// Only here: a machine that cannot run a real node never builds one.
		e.o.step("building what is stale of the control plane and of the real node's kubelet, kube-proxy and containerd (hack/build-control-plane.sh --node); the node's first build takes minutes (about half an hour measured on a two-core machine busy with other builds)")
	} else {
		e.o.step("building what is stale of the control plane (hack/build-control-plane.sh)")
	}
	dir, err := testenv.BuildBinaries(ctx, "", e.o.realNode, os.Stderr)
	if err != nil && e.o.realNode {
		return "", e.o.realNodeErr(err)
	}
	return dir, err
}

// terminalIs says what the link's terminal is: a shell in the Agent pod's
// container on the real node, or a shell on this machine.
func (e *env) terminalIs(ctx context.Context) string {
	if !e.o.realNode {
		who := "uid " + strconv.Itoa(os.Getuid())
		if u, err := user.Current(); err == nil {
			who = u.Username
		}
		return fmt.Sprintf("Its terminal is a shell on this machine, run as %s by the stand-in node: not a container.", who)
	}
	pods := &corev1.PodList{}
	pod := "its pod"
	if err := e.admin.List(ctx, pods, client.InNamespace(demoNamespace), client.MatchingLabels{share.LabelAgent: demoAgent}); err == nil {
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
				pod = "pod " + p.Name
			}
		}
	}
	return fmt.Sprintf("Its terminal is a busybox shell in the Agent's container (%s) on the real node %s.", pod, testenv.RealNodeName)
}

// exited reports the first child that ends on its own.
func (e *env) exited() <-chan error {
	ch := make(chan error, len(e.children))
	for _, c := range e.children {
		go func() {
			<-c.Done()
			ch <- fmt.Errorf("%s exited (%v); see %s", c.Name(), c.Err(), c.LogPath())
		}()
	}
	return ch
}

func (e *env) stop() {
	for _, c := range e.children {
		c.Stop()
	}
	if e.cp != nil {
		e.cp.Stop()
	}
}

// developerKubeconfig makes the demo namespace, binds the developer to edit
// there (which aggregates the share editor role) and writes their kubeconfig.
func (e *env) developerKubeconfig(ctx context.Context) (string, error) {
	if err := e.cp.CreateNamespace(ctx, demoNamespace); err != nil {
		return "", err
	}
	kubeconfig, err := e.userKubeconfig(ctx, developer, "edit", "kubeconfig")
	if err != nil {
		return "", err
	}
	// The edit role gains agents/share once kube-controller-manager has
	// aggregated the shipped ClusterRoles into it.
	return kubeconfig, wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		cmd := exec.CommandContext(ctx, filepath.Join(e.cp.BinDir(), "kubectl"), "--kubeconfig", kubeconfig,
			"auth", "can-i", "create", "agents."+subresourcesv1alpha1.GroupName, "--subresource=share", "-n", demoNamespace)
		out, _ := cmd.Output()
		return strings.TrimSpace(string(out)) == "yes", nil
	})
}

// userKubeconfig binds user to the ClusterRole role in the demo namespace and
// writes their kubeconfig, named file in the state folder.
func (e *env) userKubeconfig(ctx context.Context, user, role, file string) (string, error) {
	binding := fmt.Sprintf(`apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: %s-%s, namespace: %s}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: %s}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: %s}]
`, user, role, demoNamespace, role, user)
	path := filepath.Join(e.o.StateDir, user+"-binding.yaml")
	if err := os.WriteFile(path, []byte(binding), 0o644); err != nil {
		return "", err
	}
	if err := e.cp.CreateFromFile(ctx, path); err != nil {
		return "", err
	}
	cfg, err := e.cp.UserConfig(user, "system:authenticated")
	if err != nil {
		return "", err
	}
	kubeconfig := filepath.Join(e.o.StateDir, file)
	return kubeconfig, testenv.WriteKubeconfig(kubeconfig, cfg, demoNamespace)
}

func (e *env) demoAgent(ctx context.Context) error {
	agent := &kubeopencodev1alpha1.Agent{
		ObjectMeta: metav1.ObjectMeta{Namespace: demoNamespace, Name: demoAgent},
		Spec:       kubeopencodev1alpha1.AgentSpec{Image: "kubeopencode/demo-agent:dev"},
	}
	if e.o.realNode {
		// The image hack/build-images.sh built and the node imported.
		agent.Spec.Image = "kubeopencode/agent-busybox:test"
		agent.Spec.Command = []string{"sleep", "infinity"}
		agent.Spec.Terminal = &kubeopencodev1alpha1.TerminalSpec{Command: []string{"sh"}}
	}
	if err := e.admin.Create(ctx, agent); err != nil {
		return err
	}
	key := types.NamespacedName{Namespace: demoNamespace, Name: demoAgent}
	// A container on a real node takes longer than the stand-in's pretend
	// one, the more so on a busy machine.
	timeout := 2 * time.Minute
	if e.o.realNode {
		timeout = 4 * time.Minute
	}
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		a := &kubeopencodev1alpha1.Agent{}
		if err := e.admin.Get(ctx, key, a); err != nil {
			return false, nil
		}
		return meta.IsStatusConditionTrue(a.Status.Conditions, kubeopencodev1alpha1.ConditionReady), nil
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("the demo Agent %s is not ready after %s: %w\n%s", key, timeout, err, e.whyNotReady(key))
	}
	return err
}

// whyNotReady tells what keeps the demo Agent from being ready: its Ready
// condition, its pods' states and the namespace's latest Events.
func (e *env) whyNotReady(key types.NamespacedName) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var b strings.Builder
	a := &kubeopencodev1alpha1.Agent{}
	if err := e.admin.Get(ctx, key, a); err != nil {
		fmt.Fprintf(&b, "  reading the Agent: %v\n", err)
	} else if c := meta.FindStatusCondition(a.Status.Conditions, kubeopencodev1alpha1.ConditionReady); c != nil {
		fmt.Fprintf(&b, "  Agent Ready=%s %s: %s\n", c.Status, c.Reason, c.Message)
	}
	pods := &corev1.PodList{}
	if err := e.admin.List(ctx, pods, client.InNamespace(key.Namespace), client.MatchingLabels{share.LabelAgent: key.Name}); err == nil {
		for _, p := range pods.Items {
			fmt.Fprintf(&b, "  pod %s on %q: %s\n", p.Name, p.Spec.NodeName, p.Status.Phase)
			for _, c := range p.Status.ContainerStatuses {
				switch {
				case c.State.Waiting != nil:
					fmt.Fprintf(&b, "    container %s waiting: %s %s\n", c.Name, c.State.Waiting.Reason, c.State.Waiting.Message)
				case c.State.Terminated != nil:
					fmt.Fprintf(&b, "    container %s terminated: %s %s\n", c.Name, c.State.Terminated.Reason, c.State.Terminated.Message)
				}
			}
		}
	}
	events := &corev1.EventList{}
	if err := e.admin.List(ctx, events, client.InNamespace(key.Namespace)); err == nil {
		items := events.Items
		slices.SortFunc(items, func(x, y corev1.Event) int { return x.LastTimestamp.Compare(y.LastTimestamp.Time) })
		for _, ev := range items[max(0, len(items)-10):] {
			fmt.Fprintf(&b, "  event %s %s/%s: %s\n", ev.Reason, ev.InvolvedObject.Kind, ev.InvolvedObject.Name, ev.Message)
		}
	}
	fmt.Fprintf(&b, "  logs: %s and %s", e.logDir, filepath.Join(e.o.StateDir, "controlplane"))
	return b.String()
}

// freeAddr returns 127.0.0.1:port, or a free port when port is 0, after
// checking that it can be bound.
func freeAddr(port int) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
