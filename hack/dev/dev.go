package main

import (
	"bufio"
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
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/controller"
	"github.com/kubeopencode/share/test/integration/framework"
)

const (
	systemNamespace = "kubeopencode-system"
	apiServiceName  = "kubeopencode-apiserver"
	demoNamespace   = "demo"
	demoAgent       = "team-agent"
	developer       = "developer"
	viewer          = "viewer"
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
	flag.Parse()
}

// env is a running development environment.
type env struct {
	o        *Options
	cp       *framework.ControlPlane
	admin    client.Client
	binDir   string
	logDir   string
	children []*exec.Cmd
}

func (o *Options) step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, ">>> "+format+"\n", args...)
}

// Run starts everything, prints the link and waits until ctx ends.
func (o *Options) Run(ctx context.Context) error {
	root, err := framework.RepoRoot()
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
	if e.cp, err = framework.Start(ctx, framework.Options{Dir: cpDir}); err != nil {
		return err
	}
	o.step("registering the stand-in node")
	if _, err := e.cp.StartStandinNode(ctx, "dev-node"); err != nil {
		return err
	}
	scheme, err := controller.NewScheme()
	if err != nil {
		return err
	}
	if e.admin, err = client.New(e.cp.Config(), client.Options{Scheme: scheme}); err != nil {
		return err
	}

	o.step("installing the Agent CRD and RBAC")
	if _, err := e.cp.InstallCRDs(ctx, filepath.Join(root, "artifacts", "crd")); err != nil {
		return err
	}
	if err := e.cp.CreateNamespace(ctx, systemNamespace); err != nil {
		return err
	}
	for _, f := range []string{"apiserver/serviceaccount.yaml", "apiserver/rbac.yaml", "apiserver/roles.yaml", "controller/serviceaccount.yaml", "controller/rbac.yaml"} {
		if err := e.cp.CreateFromFile(ctx, filepath.Join(root, "artifacts", f)); err != nil {
			return err
		}
	}

	publicURL := ""
	shareAddr, err := freeAddr(o.SharePort)
	if err != nil {
		return fmt.Errorf("share port %d: %w", o.SharePort, err)
	}
	publicURL = "http://" + shareAddr

	o.step("starting the controller")
	controllerKubeconfig, err := e.serviceAccountKubeconfig("controller", "kubeopencode-controller")
	if err != nil {
		return err
	}
	probes, err := freeAddr(0)
	if err != nil {
		return err
	}
	if err := e.run(ctx, "controller", "--kubeconfig="+controllerKubeconfig, "--leader-elect=false",
		"--metrics-bind-address=0", "--health-probe-bind-address="+probes, "--public-url="+publicURL); err != nil {
		return err
	}

	o.step("starting the aggregated API server and the share listener on %s", publicURL)
	if err := e.startAPIServer(ctx, shareAddr, publicURL); err != nil {
		return err
	}

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

// run starts one of the built binaries, its output in the log folder.
func (e *env) run(ctx context.Context, name string, args ...string) error {
	logFile, err := os.Create(filepath.Join(e.logDir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(e.binDir, name), args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The children die with this process, even when it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	e.children = append(e.children, cmd)
	return nil
}

// exited reports the first child that ends on its own.
func (e *env) exited() <-chan error {
	ch := make(chan error, len(e.children))
	for _, c := range e.children {
		go func() {
			err := c.Wait()
			ch <- fmt.Errorf("%s exited (%v); see %s", filepath.Base(c.Path), err, e.logDir)
		}()
	}
	return ch
}

func (e *env) stop() {
	for _, c := range e.children {
		if c.Process != nil {
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range e.children {
		if c.Process == nil {
			continue
		}
		for syscall.Kill(c.Process.Pid, 0) == nil && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
	}
	if e.cp != nil {
		e.cp.Stop()
	}
}

// serviceAccountKubeconfig writes a kubeconfig that authenticates as a
// ServiceAccount of the system namespace would, so the servers run with
// the shipped RBAC only.
func (e *env) serviceAccountKubeconfig(name, serviceAccount string) (string, error) {
	cfg, err := e.cp.UserConfig("system:serviceaccount:"+systemNamespace+":"+serviceAccount,
		"system:serviceaccounts", "system:serviceaccounts:"+systemNamespace, "system:authenticated")
	if err != nil {
		return "", err
	}
	path := filepath.Join(e.o.StateDir, name+".kubeconfig")
	return path, framework.WriteKubeconfig(path, cfg, "")
}

func (e *env) startAPIServer(ctx context.Context, shareAddr, publicURL string) error {
	kubeconfig, err := e.serviceAccountKubeconfig("apiserver", "kubeopencode-apiserver")
	if err != nil {
		return err
	}
	ca, err := framework.NewCA("kubeopencode-dev-apiserver")
	if err != nil {
		return err
	}
	cert, err := ca.IssueServing([]string{apiServiceName + "." + systemNamespace + ".svc", "localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		return err
	}
	certFile, keyFile := filepath.Join(e.o.StateDir, "apiserver.crt"), filepath.Join(e.o.StateDir, "apiserver.key")
	if err := os.WriteFile(certFile, cert.CertPEM, 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, cert.KeyPEM, 0o600); err != nil {
		return err
	}
	port, err := framework.FreePort()
	if err != nil {
		return err
	}
	shareHost, sharePort, _ := net.SplitHostPort(shareAddr)
	if err := e.run(ctx, "aggregated-apiserver",
		"--kubeconfig="+kubeconfig,
		"--authentication-kubeconfig="+kubeconfig,
		"--authorization-kubeconfig="+kubeconfig,
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(port),
		"--tls-cert-file="+certFile,
		"--tls-private-key-file="+keyFile,
		"--public-url="+publicURL,
		"--max-share-duration=168h",
		"--share-bind-address="+shareHost,
		"--share-port="+sharePort,
	); err != nil {
		return err
	}
	if err := e.cp.RegisterAPIService(ctx, subresourcesv1alpha1.GroupName, "v1alpha1", systemNamespace, apiServiceName, port, ca.CertPEM); err != nil {
		return err
	}
	if err := e.cp.WaitForAPIService(ctx, "v1alpha1."+subresourcesv1alpha1.GroupName, 2*time.Minute); err != nil {
		return fmt.Errorf("%w\n%s", err, tail(filepath.Join(e.logDir, "aggregated-apiserver.log")))
	}
	return nil
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
	return kubeconfig, framework.WriteKubeconfig(kubeconfig, cfg, demoNamespace)
}

func (e *env) demoAgent(ctx context.Context) error {
	agent := &kubeopencodev1alpha1.Agent{
		ObjectMeta: metav1.ObjectMeta{Namespace: demoNamespace, Name: demoAgent},
		Spec:       kubeopencodev1alpha1.AgentSpec{Image: "kubeopencode/demo-agent:dev"},
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

func tail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		lines = append(lines, s.Text())
		if len(lines) > 30 {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
