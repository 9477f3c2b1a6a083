package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
	utilexec "k8s.io/utils/exec"
	"k8s.io/utils/ptr"
)

func adminClient(t *testing.T) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(shared.cp.Config())
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestControlPlaneServes(t *testing.T) {
	cs := adminClient(t)
	for _, ns := range []string{"default", "kube-system", "kube-public"} {
		if _, err := cs.CoreV1().Namespaces().Get(t.Context(), ns, metav1.GetOptions{}); err != nil {
			t.Errorf("namespace %s: %v", ns, err)
		}
	}
	// The controller manager's serviceaccount controller is running.
	if err := shared.cp.WaitForDefaultServiceAccount(t.Context(), "default"); err != nil {
		t.Fatalf("default ServiceAccount: %v", err)
	}
	node, err := cs.CoreV1().Nodes().Get(t.Context(), shared.nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("stand-in node: %v", err)
	}
	if node.Status.DaemonEndpoints.KubeletEndpoint.Port == 0 || node.Status.Addresses[0].Address != "127.0.0.1" {
		t.Errorf("stand-in node status: %+v", node.Status)
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
// stand-in node, and waits until it is Available.
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
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "example/shell:1.0"}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(t.Context(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return got.Status.AvailableReplicas == 1, nil
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
	return pod
}

func TestDeploymentRunsOnStandinNodeAndIsGarbageCollected(t *testing.T) {
	ns := newNamespace(t)
	cs := adminClient(t)
	runDeployment(t, cs, ns, "shell")

	if err := cs.AppsV1().Deployments(ns).Delete(t.Context(), "shell", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The real garbage collector removes the ReplicaSet and its pods.
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
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

	stdout, stderr, err := shared.cp.Kubectl(t.Context(), shared.cp.KubeconfigPath(), nil,
		"exec", "-n", ns, pod.Name, "--", "sh", "-c", "echo hi; echo oops >&2; exit 3")
	var exitErr interface{ ExitCode() int }
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 3 {
		t.Fatalf("kubectl exec: err %v, want exit code 3\nstdout: %s\nstderr: %s", err, stdout, stderr)
	}
	if stdout != "hi\n" || !strings.Contains(stderr, "oops") {
		t.Errorf("kubectl exec: stdout %q, stderr %q", stdout, stderr)
	}

	stdout, stderr, err = shared.cp.Kubectl(t.Context(), shared.cp.KubeconfigPath(), []byte("from stdin\n"),
		"exec", "-i", "-n", ns, pod.Name, "--", "cat")
	if err != nil || stdout != "from stdin\n" {
		t.Errorf("kubectl exec -i cat: %q, %v, %s", stdout, err, stderr)
	}
}

// sizeQueue hands remotecommand the terminal sizes a test sends.
type sizeQueue chan *remotecommand.TerminalSize

func (q sizeQueue) Next() *remotecommand.TerminalSize { return <-q }

// lockedBuffer collects output that the test reads while it is written.
type lockedBuffer struct {
	ch  chan []byte
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.ch <- append([]byte(nil), p...)
	return len(p), nil
}

// waitFor reads output until it contains want.
func (b *lockedBuffer) waitFor(t *testing.T, want string) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for !strings.Contains(b.buf.String(), want) {
		select {
		case p := <-b.ch:
			b.buf.Write(p)
		case <-timeout:
			t.Fatalf("timed out waiting for %q in output:\n%s", want, b.buf.String())
		}
	}
}

func TestRemoteCommandWithTTYAndResize(t *testing.T) {
	ns := newNamespace(t)
	cs := adminClient(t)
	pod := runDeployment(t, cs, ns, "shell")

	tests := []struct {
		name     string
		protocol string
	}{
		{name: "websocket with spdy fallback", protocol: "fallback"},
		{name: "spdy", protocol: "spdy"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(ns).Name(pod.Name).SubResource("exec").
				VersionedParams(&corev1.PodExecOptions{Container: "main", Command: []string{"sh"}, Stdin: true, Stdout: true, TTY: true}, scheme.ParameterCodec)
			cfg := shared.cp.Config()
			spdy, err := remotecommand.NewSPDYExecutor(cfg, "POST", req.URL())
			if err != nil {
				t.Fatal(err)
			}
			exec := spdy
			if tc.protocol == "fallback" {
				ws, err := remotecommand.NewWebSocketExecutor(cfg, "GET", req.URL().String())
				if err != nil {
					t.Fatal(err)
				}
				if exec, err = remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
					return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
				}); err != nil {
					t.Fatal(err)
				}
			}
			stdinR, stdinW := io.Pipe()
			out := &lockedBuffer{ch: make(chan []byte, 1024)}
			sizes := make(sizeQueue, 4)
			sizes <- &remotecommand.TerminalSize{Width: 100, Height: 30}
			done := make(chan error, 1)
			go func() {
				done <- exec.StreamWithContext(t.Context(), remotecommand.StreamOptions{
					Stdin: stdinR, Stdout: out, Tty: true, TerminalSizeQueue: sizes,
				})
			}()
			send := func(s string) {
				if _, err := io.WriteString(stdinW, s); err != nil {
					t.Fatal(err)
				}
			}
			send("echo hello-$((6*7))\n")
			out.waitFor(t, "hello-42")
			send("stty size\n")
			out.waitFor(t, "30 100")
			sizes <- &remotecommand.TerminalSize{Width: 132, Height: 43}
			// The resize travels on its own stream; ask until the shell sees it.
			deadline := time.Now().Add(20 * time.Second)
			for !strings.Contains(out.buf.String(), "43 132") && time.Now().Before(deadline) {
				send("stty size\n")
				drain := time.After(300 * time.Millisecond)
			collect:
				for {
					select {
					case p := <-out.ch:
						out.buf.Write(p)
					case <-drain:
						break collect
					}
				}
			}
			out.waitFor(t, "43 132")
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
			close(sizes)
		})
	}
}

func TestPodCreationNeedsNoManualServiceAccount(t *testing.T) {
	ns := newNamespace(t)
	_, err := adminClient(t).CoreV1().Pods(ns).Create(t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating a pod in a fresh namespace: %v", err)
	}
}
