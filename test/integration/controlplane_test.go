package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/streaming/pkg/httpstream"
	utilexec "k8s.io/utils/exec"
	"k8s.io/utils/ptr"

	"github.com/kubeopencode/share/pkg/sharehttp/podexec"
)

// pollInterval and pollTimeout bound every wait on the cluster.
const (
	pollInterval = 100 * time.Millisecond
	pollTimeout  = 2 * time.Minute
)

func adminClient(t *testing.T) kubernetes.Interface {
	t.Helper()
	return clientFor(t, shared.cp.Config())
}

func clientFor(t *testing.T, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestControlPlaneServes(t *testing.T) {
	cs := adminClient(t)
	nss, err := cs.CoreV1().Namespaces().List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("listing namespaces as admin: %v", err)
	}
	for _, want := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
		if !slices.ContainsFunc(nss.Items, func(ns corev1.Namespace) bool { return ns.Name == want }) {
			t.Errorf("namespace %s missing", want)
		}
	}
	// The controller manager's serviceaccount controller is running.
	if err := shared.cp.WaitForDefaultServiceAccount(t.Context(), "default"); err != nil {
		t.Fatal(err)
	}
	node, err := cs.CoreV1().Nodes().Get(t.Context(), shared.nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("stand-in node: %v", err)
	}
	if got := node.Status.DaemonEndpoints.KubeletEndpoint.Port; got == 0 {
		t.Errorf("stand-in node has no kubelet port")
	}
	if !slices.Contains(node.Status.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}) {
		t.Errorf("stand-in node addresses %v lack InternalIP 127.0.0.1", node.Status.Addresses)
	}
	if !slices.ContainsFunc(node.Status.Conditions, func(c corev1.NodeCondition) bool {
		return c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
	}) {
		t.Errorf("stand-in node not Ready: %v", node.Status.Conditions)
	}
	if _, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(t.Context(), shared.nodeName, metav1.GetOptions{}); err != nil {
		t.Errorf("stand-in node lease: %v", err)
	}
}

func TestUserConfigIsSubjectToRBAC(t *testing.T) {
	ns := newNamespace(t)
	cfg, err := shared.cp.UserConfig("alice", "team-a")
	if err != nil {
		t.Fatal(err)
	}
	alice := clientFor(t, cfg)
	if _, err := alice.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("alice listing pods without a binding: %v, want Forbidden", err)
	}
	_, err = adminClient(t).RbacV1().RoleBindings(ns).Create(t.Context(), &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "team-a-view"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "view"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: "team-a"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(t.Context(), pollInterval, pollTimeout, true, func(ctx context.Context) (bool, error) {
		_, err := alice.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("alice cannot list pods through her group's binding: %v", err)
	}
}

func TestAgentCRDIsEstablishedAndValidates(t *testing.T) {
	ns := newNamespace(t)
	tests := []struct {
		name    string
		share   string
		wantErr []string
	}{
		{name: "valid", share: `{enabled: true, expiresAt: "2030-01-01T00:00:00Z", allowedIPs: ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]}`},
		{name: "bad cidr", share: `{enabled: true, allowedIPs: ["10.0.0.0/33"]}`, wantErr: []string{"spec.share.allowedIPs[0]", "must be an IP address or a CIDR range"}},
		{name: "not an address", share: `{enabled: true, allowedIPs: ["10.0.0.0/8", "example.com"]}`, wantErr: []string{"spec.share.allowedIPs[1]"}},
		{name: "bad timestamp", share: `{enabled: true, expiresAt: "next tuesday"}`, wantErr: []string{"spec.share.expiresAt"}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			manifest := fmt.Sprintf(`apiVersion: kubeopencode.io/v1alpha1
kind: Agent
metadata:
  name: agent-%d
  namespace: %s
spec:
  image: example/agent:1.0
  share: %s
`, i, ns, tc.share)
			stdout, stderr, err := shared.cp.Kubectl(t.Context(), shared.cp.KubeconfigPath(), []byte(manifest), "apply", "-f", "-")
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("kubectl apply: %v\n%s%s", err, stdout, stderr)
				}
				return
			}
			if err == nil {
				t.Fatalf("kubectl apply accepted a bad Agent:\n%s", stdout)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(stderr, want) {
					t.Errorf("kubectl apply error does not mention %q:\n%s", want, stderr)
				}
			}
		})
	}
}

// runDeployment creates a Deployment whose pod the scheduler binds to the
// stand-in node, waits until it is Available, and returns its pod.
func runDeployment(t *testing.T, cs kubernetes.Interface, ns, name string) *corev1.Pod {
	t.Helper()
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:  "main",
					Image: "example/shell:1.0",
					Env:   []corev1.EnvVar{{Name: "GREETING", Value: "hello from the pod"}},
				}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(t.Context(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(t.Context(), pollInterval, pollTimeout, true, func(ctx context.Context) (bool, error) {
		got, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range got.Status.Conditions {
			if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue {
				return got.Status.AvailableReplicas == 1, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("Deployment %s/%s never became Available: %v", ns, name, err)
	}
	pods, err := cs.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods of %s: %d, %v", name, len(pods.Items), err)
	}
	pod := &pods.Items[0]
	if pod.Spec.NodeName != shared.nodeName {
		t.Fatalf("pod scheduled to %q, want %q", pod.Spec.NodeName, shared.nodeName)
	}
	if pod.Status.PodIP != "127.0.0.1" || len(pod.Status.ContainerStatuses) != 1 || !pod.Status.ContainerStatuses[0].Ready {
		t.Fatalf("pod status not that of a running pod: %+v", pod.Status)
	}
	return pod
}

func TestDeploymentRunsOnStandinNodeAndIsGarbageCollected(t *testing.T) {
	ns := newNamespace(t)
	cs := adminClient(t)
	runDeployment(t, cs, ns, "shell")
	rss, err := cs.AppsV1().ReplicaSets(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil || len(rss.Items) != 1 {
		t.Fatalf("ReplicaSets: %d, %v", len(rss.Items), err)
	}

	// Background propagation: the Deployment goes at once, and the real
	// garbage collector then removes the ReplicaSet and its pods, which
	// the stand-in kubelet finishes deleting.
	if err := cs.AppsV1().Deployments(ns).Delete(t.Context(), "shell", metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(t.Context(), pollInterval, pollTimeout, true, func(ctx context.Context) (bool, error) {
		rs, err := cs.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		return len(rs.Items) == 0 && len(pods.Items) == 0, nil
	})
	if err != nil {
		t.Fatalf("ReplicaSet and pods not garbage-collected: %v", err)
	}
}

func TestKubectlExecOnStandinNode(t *testing.T) {
	ns := newNamespace(t)
	pod := runDeployment(t, adminClient(t), ns, "shell")

	tests := []struct {
		name       string
		args       []string
		stdin      string
		wantStdout string
		wantStderr string
		wantCode   int
	}{
		{name: "exit code", args: []string{"sh", "-c", "echo hi; exit 3"}, wantStdout: "hi\n", wantCode: 3},
		{name: "stderr", args: []string{"sh", "-c", "echo oops >&2"}, wantStderr: "oops\n"},
		{name: "stdin", args: []string{"-i", "cat"}, stdin: "from stdin\n", wantStdout: "from stdin\n"},
		{name: "container env", args: []string{"sh", "-c", `echo "$GREETING"`}, wantStdout: "hello from the pod\n"},
		{name: "pod working folder", args: []string{"sh", "-c", `pwd | grep -q "/nodes/standin-node/` + ns + `/` + pod.Name + `$"`}},
		{name: "unknown command", args: []string{"no-such-command"}, wantStderr: "no-such-command", wantCode: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"exec", "-n", ns, pod.Name}
			cmd := tc.args
			if cmd[0] == "-i" {
				args, cmd = append(args, "-i"), cmd[1:]
			}
			var stdin []byte
			if tc.stdin != "" {
				stdin = []byte(tc.stdin)
			}
			stdout, stderr, err := shared.cp.Kubectl(t.Context(), shared.cp.KubeconfigPath(), stdin, append(append(args, "--"), cmd...)...)
			code := 0
			var exitErr interface{ ExitCode() int }
			if errors.As(err, &exitErr) {
				code = exitErr.ExitCode()
			} else if err != nil {
				t.Fatalf("kubectl exec: %v\n%s", err, stderr)
			}
			if code != tc.wantCode {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tc.wantCode, stderr)
			}
			if stdout != tc.wantStdout {
				t.Errorf("stdout %q, want %q", stdout, tc.wantStdout)
			}
			if !strings.Contains(stderr, tc.wantStderr) {
				t.Errorf("stderr %q does not contain %q", stderr, tc.wantStderr)
			}
		})
	}
}

// The share listener's own executor, alone and behind a proxy that refuses
// WebSocket upgrades, for newExecutor.
const (
	listenerProtocol                 = "share listener"
	listenerWithoutWebSocketProtocol = "share listener, WebSocket refused"
)

// newExecutor returns an executor for pod exec that speaks protocol:
// "fallback" is WebSocket first and SPDY when the upgrade fails, as kubectl
// does; "spdy" is SPDY alone; listenerProtocol is the share listener's own
// executor, and listenerWithoutWebSocketProtocol the same through a proxy
// that refuses WebSocket upgrades, so that it falls back to SPDY.
func newExecutor(t *testing.T, cfg *rest.Config, cs kubernetes.Interface, pod *corev1.Pod, protocol string, opts *corev1.PodExecOptions) remotecommand.Executor {
	t.Helper()
	switch protocol {
	case listenerWithoutWebSocketProtocol:
		cfg = webSocketRefusingProxy(t, cfg)
		fallthrough
	case listenerProtocol:
		ex, err := podexec.NewClient(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return listenerExecutor{ex: ex, pod: pod, opts: opts}
	}
	req := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("exec").
		VersionedParams(opts, scheme.ParameterCodec)
	spdy, err := remotecommand.NewSPDYExecutor(cfg, "POST", req.URL())
	if err != nil {
		t.Fatal(err)
	}
	if protocol == "spdy" {
		return spdy
	}
	ws, err := remotecommand.NewWebSocketExecutor(cfg, "GET", req.URL().String())
	if err != nil {
		t.Fatal(err)
	}
	exec, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		t.Fatal(err)
	}
	return exec
}

// listenerExecutor runs one command with the share listener's executor, which
// takes the streams to open from the options it streams with.
type listenerExecutor struct {
	ex   *podexec.Client
	pod  *corev1.Pod
	opts *corev1.PodExecOptions
}

func (e listenerExecutor) Stream(o remotecommand.StreamOptions) error {
	return e.StreamWithContext(context.Background(), o)
}

func (e listenerExecutor) StreamWithContext(ctx context.Context, o remotecommand.StreamOptions) error {
	return e.ex.Exec(ctx, e.pod.Namespace, e.pod.Name, e.opts.Container, e.opts.Command, o)
}

// webSocketRefusingProxy fronts the API server with a proxy that answers
// WebSocket upgrades with 400 and passes everything else on, SPDY upgrades
// included, as proxies that predate WebSocket exec do. It returns a config
// for the API server through the proxy, which holds cfg's credentials.
func webSocketRefusingProxy(t *testing.T, cfg *rest.Config) *rest.Config {
	t.Helper()
	target, err := url.Parse(cfg.Host)
	if err != nil {
		t.Fatal(err)
	}
	// HTTP/2 carries no upgrades: the proxy's side must speak HTTP/1.1.
	backend := rest.CopyConfig(cfg)
	backend.NextProtos = []string{"http/1.1"}
	rt, err := rest.TransportFor(backend)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = rt
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "this proxy does not pass WebSocket upgrades", http.StatusBadRequest)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return &rest.Config{Host: srv.URL}
}

// sizeQueue hands remotecommand the terminal sizes a test sends.
type sizeQueue chan *remotecommand.TerminalSize

// Next returns the next size, or nil once the queue is closed.
func (q sizeQueue) Next() *remotecommand.TerminalSize { return <-q }

// syncBuffer collects output that the test reads while it is written.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls the output until it contains want, calling poke (when not
// nil) before each look.
func (b *syncBuffer) waitFor(t *testing.T, want string, poke func()) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		if poke != nil {
			poke()
		}
		return strings.Contains(b.String(), want), nil
	})
	if err != nil {
		t.Fatalf("%q never appeared in the output: %v\n%s", want, err, b.String())
	}
}

func TestRemoteCommandOnStandinNode(t *testing.T) {
	ns := newNamespace(t)
	cs := adminClient(t)
	pod := runDeployment(t, cs, ns, "shell")
	cfg := shared.cp.Config()

	for _, protocol := range []string{"fallback", "spdy", listenerProtocol, listenerWithoutWebSocketProtocol} {
		t.Run(protocol+"/tty and resize", func(t *testing.T) {
			exec := newExecutor(t, cfg, cs, pod, protocol, &corev1.PodExecOptions{Container: "main", Command: []string{"sh"}, Stdin: true, Stdout: true, TTY: true})
			stdinR, stdinW := io.Pipe()
			defer stdinW.Close()
			out := &syncBuffer{}
			sizes := make(sizeQueue, 4)
			defer close(sizes)
			sizes <- &remotecommand.TerminalSize{Width: 100, Height: 30}
			done := make(chan error, 1)
			go func() {
				err := exec.StreamWithContext(t.Context(), remotecommand.StreamOptions{
					Stdin: stdinR, Stdout: out, Tty: true, TerminalSizeQueue: sizes,
				})
				// A stream that fails fails the test's writes rather than
				// leaving them blocked.
				stdinR.CloseWithError(fmt.Errorf("the stream ended: %v", err))
				done <- err
			}()
			send := func(s string) {
				if _, err := io.WriteString(stdinW, s); err != nil {
					t.Errorf("writing stdin: %v", err)
				}
			}
			// The terminal echoes stdin; the shell's output shows it ran.
			send("echo hello-$((6*7)) $TERM\n")
			out.waitFor(t, "hello-42 xterm-256color", nil)
			send("stty size\n")
			out.waitFor(t, "30 100", nil)
			// The resize travels on a stream of its own, so the shell may
			// read the next line before it applies: ask until it has.
			sizes <- &remotecommand.TerminalSize{Width: 132, Height: 43}
			out.waitFor(t, "43 132", func() { send("stty size\n") })
			send("exit 7\n")
			select {
			case err := <-done:
				var exitErr utilexec.ExitError
				if !errors.As(err, &exitErr) || exitErr.ExitStatus() != 7 {
					t.Fatalf("stream ended with %v, want exit code 7", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("stream did not end after exit")
			}
		})
		t.Run(protocol+"/stdin echo and exit code", func(t *testing.T) {
			exec := newExecutor(t, cfg, cs, pod, protocol, &corev1.PodExecOptions{
				Container: "main", Command: []string{"sh", "-c", "cat; echo done >&2; exit 5"}, Stdin: true, Stdout: true, Stderr: true,
			})
			var stdout, stderr syncBuffer
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			err := exec.StreamWithContext(ctx, remotecommand.StreamOptions{
				Stdin: strings.NewReader("line one\nline two\n"), Stdout: &stdout, Stderr: &stderr,
			})
			var exitErr utilexec.ExitError
			if !errors.As(err, &exitErr) || exitErr.ExitStatus() != 5 {
				t.Errorf("stream ended with %v, want exit code 5", err)
			}
			if got := stdout.String(); got != "line one\nline two\n" {
				t.Errorf("stdout %q", got)
			}
			if got := stderr.String(); got != "done\n" {
				t.Errorf("stderr %q", got)
			}
		})
	}
}

func TestExecIntoUnknownContainerFails(t *testing.T) {
	ns := newNamespace(t)
	cs := adminClient(t)
	pod := runDeployment(t, cs, ns, "shell")
	exec := newExecutor(t, shared.cp.Config(), cs, pod, "fallback", &corev1.PodExecOptions{Container: "nope", Command: []string{"true"}, Stdout: true})
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	err := exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("exec into an unknown container: %v, want an error naming it", err)
	}
}
