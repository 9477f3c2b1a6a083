package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeopencode/share/internal/testenv"
	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
)

const (
	demoNamespace = "demo"
	demoAgent     = "team-agent"
	developer     = "developer"
	viewer        = "viewer"
)

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
	// RealNode runs the demo Agent in a real container on a real node
	// (kubelet, containerd, kube-proxy; root and Linux, make node first)
	// instead of on the stand-in, whose terminal is a shell on this machine.
	RealNode bool
	// Root is the repository.
	Root string

	out io.Writer
}

// NewOptions returns the defaults.
func NewOptions() *Options {
	return &Options{StateDir: "_output/dev", SharePort: 8480, out: os.Stdout}
}

// AddFlags registers the flags on the process's flag set.
func (o *Options) AddFlags() {
	flag.StringVar(&o.StateDir, "state-dir", o.StateDir, "Folder for the control plane's state, binaries, logs and kubeconfigs.")
	flag.IntVar(&o.SharePort, "share-port", o.SharePort, "Port of the share listener on 127.0.0.1; 0 picks a free one.")
	flag.StringVar(&o.BinDir, "bin-dir", o.BinDir, "Folder of the built aggregated-apiserver, controller and kubeoc, as make build leaves them. Empty builds them.")
	flag.BoolVar(&o.RealNode, "real-node", o.RealNode, "Run the demo Agent in a real busybox container on a real node (root, Linux; make node first) instead of the stand-in node, whose terminal is a shell on this machine.")
	flag.Parse()
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

	o.step("starting etcd, kube-apiserver, kube-controller-manager and kube-scheduler (logs in %s)", filepath.Join(o.StateDir, "controlplane"))
	cpDir := filepath.Join(o.StateDir, "controlplane")
	_ = os.RemoveAll(cpDir)
	cpOpts := testenv.Options{Dir: cpDir}
	if o.RealNode {
		if err := testenv.CheckRealNodeHost(); err != nil {
			return fmt.Errorf("--real-node: %w", err)
		}
		o.step("building the image archives for the real node (hack/build-images.sh)")
		images := filepath.Join(o.StateDir, "images")
		build := exec.CommandContext(ctx, filepath.Join(root, "hack", "build-images.sh"), images)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("building the image archives: %w", err)
		}
		cpOpts.RealNode = true
		cpOpts.NodeImages = []string{filepath.Join(images, "pause.tar"), filepath.Join(images, "agent.tar")}
		o.step("with a real node (kubelet, containerd, kube-proxy): the demo Agent runs in a busybox container")
	}
	if e.cp, err = testenv.Start(ctx, cpOpts); err != nil {
		return err
	}
	if !o.RealNode {
		o.step("registering the stand-in node: the demo Agent's terminal is a shell on this machine, not a container (--real-node runs a real one, as root on Linux)")
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
	fmt.Fprintf(o.out, "Share link: %s\n\n", url[1])
	fmt.Fprintf(o.out, "Use the cluster as the developer of namespace %s:\n", demoNamespace)
	fmt.Fprintf(o.out, "  export KUBECONFIG=%s\n", userKubeconfig)
	fmt.Fprintf(o.out, "  %s agent list\n", filepath.Join(e.binDir, "kubeoc"))
	fmt.Fprintf(o.out, "  %s agent share %s --rotate\n", filepath.Join(e.binDir, "kubeoc"), demoAgent)
	fmt.Fprintf(o.out, "As a user who may only view namespace %s (sees the Agent, never its token):\n", demoNamespace)
	fmt.Fprintf(o.out, "  export KUBECONFIG=%s\n", viewerKubeconfig)
	fmt.Fprintf(o.out, "  %s agent share %s --show    # forbidden\n", filepath.Join(e.binDir, "kubeoc"), demoAgent)
	fmt.Fprintf(o.out, "Cluster admin: export KUBECONFIG=%s\n", e.cp.KubeconfigPath())
	fmt.Fprintf(o.out, "Logs: %s\n\nPress Ctrl-C to stop everything.\n", e.logDir)

	select {
	case <-ctx.Done():
	case err := <-e.exited():
		return err
	}
	o.step("stopping")
	return nil
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
	if e.o.RealNode {
		// The image hack/build-images.sh built and the node imported.
		agent.Spec.Image = "kubeopencode/agent-busybox:test"
		agent.Spec.Command = []string{"sleep", "infinity"}
		agent.Spec.Terminal = &kubeopencodev1alpha1.TerminalSpec{Command: []string{"sh"}}
	}
	if err := e.admin.Create(ctx, agent); err != nil {
		return err
	}
	key := types.NamespacedName{Namespace: demoNamespace, Name: demoAgent}
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		a := &kubeopencodev1alpha1.Agent{}
		if err := e.admin.Get(ctx, key, a); err != nil {
			return false, nil
		}
		for _, c := range a.Status.Conditions {
			if c.Type == kubeopencodev1alpha1.ConditionReady && c.Status == metav1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
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
