//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeopencode/share/internal/browsertest"
	"github.com/kubeopencode/share/internal/testenv"
)

const (
	namespace  = "kubeopencode-system"
	apiService = "v1alpha1.subresources.kubeopencode.io"
	agentImage = "kubeopencode/agent-busybox:test"
)

// TestShippedManifestsOnARealNode installs what a user installs — the
// image built from this tree and `kubectl apply -k` of artifacts/ with the
// certificates of hack/gen-apiserver-certs.sh — on a real node, and uses it
// as a user would: an Agent's pod runs a real container, an edit user
// enables its link with kubectl, a browser types into the terminal through
// the listener's Service, a view user is refused. Nothing of the node's
// ranges may leave the machine meanwhile.
func TestShippedManifestsOnARealNode(t *testing.T) {
	e := startNode(t)

	e.kubectl(t, "", "apply", "--server-side", "-k", e.overlay(t))
	e.waitFor(t, "the APIService to be Available through its Service", 3*time.Minute, func(ctx context.Context) (bool, error) {
		out, _, err := e.cp.Kubectl(ctx, e.cp.KubeconfigPath(), nil, "get", "apiservice", apiService,
			"-o", `jsonpath={.status.conditions[?(@.type=="Available")].status}`)
		return err == nil && out == "True", nil
	})
	for _, d := range []string{"kubeopencode-apiserver", "kubeopencode-controller"} {
		e.kubectl(t, "", "-n", namespace, "rollout", "status", "deployment/"+d, "--timeout=3m")
	}

	t.Run("the servers run as the manifests say", func(t *testing.T) {
		for _, app := range []string{"kubeopencode-apiserver", "kubeopencode-controller"} {
			for _, pod := range e.pods(t, namespace, "app.kubernetes.io/name="+app) {
				e.checkHardened(t, pod)
			}
		}
	})

	agentNS := "team"
	e.kubectl(t, "", "create", "namespace", agentNS)
	agentName := "shell"
	e.kubectl(t, "", "apply", "-f", "-", "--stdin-data="+fmt.Sprintf(`apiVersion: kubeopencode.io/v1alpha1
kind: Agent
metadata:
  name: %s
  namespace: %s
spec:
  image: %s
  command: ["sleep", "infinity"]
  terminal:
    command: ["sh"]
`, agentName, agentNS, agentImage))
	e.waitFor(t, "the Agent to be Ready", 2*time.Minute, func(ctx context.Context) (bool, error) {
		out, _, err := e.cp.Kubectl(ctx, e.cp.KubeconfigPath(), nil, "-n", agentNS, "get", "agent", agentName,
			"-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		return err == nil && out == "True", nil
	})
	agentPods := e.pods(t, agentNS, "kubeopencode.io/agent="+agentName)
	if len(agentPods) != 1 {
		t.Fatalf("the Agent has %d pods, want 1", len(agentPods))
	}
	agentPod := agentPods[0]
	if agentPod.Spec.NodeName != testenv.RealNodeName || agentPod.Status.PodIP == "" {
		t.Fatalf("the Agent's pod %s is on node %q with IP %q, want the real node", agentPod.Name, agentPod.Spec.NodeName, agentPod.Status.PodIP)
	}

	editor := e.userKubeconfig(t, "alice", agentNS, "edit")
	viewer := e.userKubeconfig(t, "bob", agentNS, "view")
	sharePath := "/apis/subresources.kubeopencode.io/v1alpha1/namespaces/" + agentNS + "/agents/" + agentName + "/share"
	body := filepath.Join(t.TempDir(), "share.json")
	if err := os.WriteFile(body, []byte(`{"apiVersion":"subresources.kubeopencode.io/v1alpha1","kind":"AgentShare"}`), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("a view user may not enable the link", func(t *testing.T) {
		out, errOut, err := e.cp.Kubectl(t.Context(), viewer, nil, "create", "--raw", sharePath, "-f", body)
		if err == nil || !strings.Contains(errOut, "Forbidden") && !strings.Contains(errOut, "forbidden") {
			t.Errorf("kubectl create --raw as a view user: err %v, stdout %q, stderr %q; want forbidden", err, out, errOut)
		}
	})

	out, errOut, err := e.cp.Kubectl(t.Context(), editor, nil, "create", "--raw", sharePath, "-f", body)
	if err != nil {
		t.Fatalf("enabling the link as an edit user: %v\n%s", err, errOut)
	}
	var share struct {
		Status struct {
			Token string `json:"token"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(out), &share); err != nil || share.Status.Token == "" {
		t.Fatalf("the answer to enabling the link has no token (%v): %s", err, out)
	}

	t.Run("a browser types into the Agent's container through the listener's Service, across a rolling restart", func(t *testing.T) {
		listener := e.serviceAddress(t, namespace, "kubeopencode-share")
		b := browsertest.Start(t, 1000, 600)
		b.Navigate("http://" + listener + "/s/" + share.Status.Token)
		b.WaitFor("the page to connect", `document.getElementById('state').className`,
			func(v string) bool { return v == "state connected" })
		rows := `(document.querySelector('.xterm-rows') || {}).innerText || ''`
		b.WaitFor("a shell prompt", rows, func(v string) bool { return strings.ContainsAny(v, "$#") })
		b.Eval(`document.querySelector('.xterm-helper-textarea').focus()`)
		b.Type("echo $HOSTNAME")
		b.Key("Enter", "Enter", 13, "\r", 0)
		b.WaitFor("the Agent pod's name", rows, func(v string) bool {
			return strings.Contains(strings.ReplaceAll(v, "echo $HOSTNAME", ""), agentPod.Name)
		})

		// A rolling restart of the servers ends the session with the
		// documented close, and Reconnect reaches a new replica.
		var oldServers []string
		for _, p := range e.pods(t, namespace, "app.kubernetes.io/name=kubeopencode-apiserver") {
			oldServers = append(oldServers, p.Name)
		}
		e.kubectl(t, "", "-n", namespace, "rollout", "restart", "deployment/kubeopencode-apiserver")
		overlay := `document.getElementById('overlay').hidden ? '' : document.getElementById('overlay-title').textContent`
		if msg := b.WaitFor("the page to be told the server is going", overlay, func(v string) bool { return v != "" }); msg != "The share server is restarting" {
			t.Errorf("during the rolling restart the page says %q, want %q", msg, "The share server is restarting")
		}
		e.kubectl(t, "", "-n", namespace, "rollout", "status", "deployment/kubeopencode-apiserver", "--timeout=3m")
		// Reconnect may land on any replica the Service names; once the
		// old ones are gone it can only land on a new one.
		e.waitFor(t, "the old replicas to be gone", 2*time.Minute, func(ctx context.Context) (bool, error) {
			list, err := e.cs.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=kubeopencode-apiserver"})
			if err != nil {
				return false, nil
			}
			for _, p := range list.Items {
				if slices.Contains(oldServers, p.Name) {
					return false, nil
				}
			}
			return true, nil
		})
		b.Eval(`document.getElementById('reconnect').click()`)
		b.WaitFor("the page to connect again", `document.getElementById('state').className + ': ' + document.getElementById('overlay-title').textContent`,
			func(v string) bool { return strings.HasPrefix(v, "state connected:") })
		b.Eval(`document.querySelector('.xterm-helper-textarea').focus()`)
		b.Type("echo after-''the-restart")
		b.Key("Enter", "Enter", 13, "\r", 0)
		b.WaitFor("output after the restart", rows, func(v string) bool { return strings.Contains(v, "after-the-restart") })
		for _, e := range b.Errors() {
			// The listener is served over plain HTTP on a ClusterIP here, where
			// an Ingress would terminate TLS: Chromium ignores its
			// Cross-Origin-Opener-Policy on such an origin, and says so.
			if strings.Contains(e, "Cross-Origin-Opener-Policy header has been ignored, because the URL's origin was untrustworthy") {
				continue
			}
			t.Errorf("the browser reports: %s", e)
		}
	})

	t.Run("the PodDisruptionBudget keeps one server up", func(t *testing.T) {
		e.waitFor(t, "the budget to allow one disruption", time.Minute, func(ctx context.Context) (bool, error) {
			pdb, err := e.cs.PolicyV1().PodDisruptionBudgets(namespace).Get(ctx, "kubeopencode-apiserver", metav1.GetOptions{})
			return err == nil && pdb.Status.CurrentHealthy == 2 && pdb.Status.DisruptionsAllowed == 1, nil
		})
		servers := e.pods(t, namespace, "app.kubernetes.io/name=kubeopencode-apiserver")
		if len(servers) != 2 {
			t.Fatalf("%d servers run, want 2", len(servers))
		}
		// A replacement is not ready before its startup probe has passed,
		// seconds after the first eviction: the second comes well before.
		evict := func(p corev1.Pod) error {
			return e.cs.PolicyV1().Evictions(namespace).Evict(t.Context(), &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: namespace}})
		}
		if err := evict(servers[0]); err != nil {
			t.Fatalf("evicting the first server: %v", err)
		}
		if err := evict(servers[1]); !apierrors.IsTooManyRequests(err) {
			t.Errorf("evicting the second server at once: %v, want 429 Too Many Requests from the budget", err)
		}
		e.kubectl(t, "", "-n", namespace, "rollout", "status", "deployment/kubeopencode-apiserver", "--timeout=3m")
	})

	t.Run("nothing of the node's ranges left the machine", func(t *testing.T) {
		n, err := testenv.EgressPackets()
		if err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%d packets from or to %s or %s left through the machine's external interface", n, testenv.PodCIDR, testenv.ServiceCIDR)
		}
	})
}

// env is a control plane with a real node, and the repository it tests.
type env struct {
	cp   *testenv.ControlPlane
	root string
	cs   kubernetes.Interface
}

// startNode builds what the real node needs (the node's binaries, the image
// archives) and starts a control plane with it.
func startNode(t *testing.T) *env {
	t.Helper()
	if err := testenv.CheckRealNodeHost(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v; .ci/run installs what a real node needs", err)
		}
		t.Skip(err)
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	binDir, err := testenv.BuildBinaries(t.Context(), "", true, &out)
	if err != nil {
		t.Fatalf("building the node's binaries: %v\n%s", err, out.String())
	}
	images := filepath.Join(root, "_output", "images")
	if out, err := exec.Command(filepath.Join(root, "hack", "build-images.sh"), images).CombinedOutput(); err != nil {
		t.Fatalf("building the image archives: %v\n%s", err, out)
	}
	// Registered first, so that it runs last, once the control plane and
	// the node have stopped: the node leaves nothing on the machine.
	t.Cleanup(func() {
		left, err := testenv.RealNodeLeftovers(context.Background())
		if err != nil {
			t.Errorf("looking for what the real node left: %v", err)
		}
		if len(left) > 0 {
			t.Errorf("the real node left behind:\n%s", strings.Join(left, "\n"))
		}
	})
	start := time.Now()
	cp := testenv.RunControlPlane(t, testenv.Options{
		BinDir:     binDir,
		RealNode:   true,
		NodeImages: []string{filepath.Join(images, "pause.tar"), filepath.Join(images, "share.tar"), filepath.Join(images, "agent.tar")},
	})
	t.Logf("control plane and real node up in %s", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("real node logs (ends):\n%s", cp.RealNode().LogTails())
		}
	})
	cs, err := kubernetes.NewForConfig(cp.Config())
	if err != nil {
		t.Fatal(err)
	}
	return &env{cp: cp, root: root, cs: cs}
}

// overlay writes the test's kustomization: artifacts/ with the certificates
// of hack/gen-apiserver-certs.sh, and the images used as imported, never
// pulled.
func (e *env) overlay(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	if out, err := exec.Command(filepath.Join(e.root, "hack", "gen-apiserver-certs.sh"), certs).CombinedOutput(); err != nil {
		t.Fatalf("hack/gen-apiserver-certs.sh: %v\n%s", err, out)
	}
	overlay := filepath.Join(dir, "overlay")
	if err := os.Mkdir(overlay, 0o700); err != nil {
		t.Fatal(err)
	}
	never := func(name string) string {
		return fmt.Sprintf(`  - target:
      kind: Deployment
      name: %s
    patch: |-
      - op: replace
        path: /spec/template/spec/containers/0/imagePullPolicy
        value: Never
`, name)
	}
	kustomization := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../certs\npatches:\n" +
		never("kubeopencode-apiserver") + never("kubeopencode-controller")
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(kustomization), 0o600); err != nil {
		t.Fatal(err)
	}
	return overlay
}

// kubectl runs kubectl as kubeconfig (the admin's if empty) and fails the
// test if it fails. An argument --stdin-data=... is passed on stdin.
func (e *env) kubectl(t *testing.T, kubeconfig string, args ...string) string {
	t.Helper()
	if kubeconfig == "" {
		kubeconfig = e.cp.KubeconfigPath()
	}
	var stdin []byte
	if last := args[len(args)-1]; strings.HasPrefix(last, "--stdin-data=") {
		stdin = []byte(strings.TrimPrefix(last, "--stdin-data="))
		args = args[:len(args)-1]
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	out, errOut, err := e.cp.Kubectl(ctx, kubeconfig, stdin, args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func (e *env) waitFor(t *testing.T, what string, timeout time.Duration, cond func(context.Context) (bool, error)) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(t.Context(), 250*time.Millisecond, timeout, true, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func (e *env) pods(t *testing.T, ns, selector string) []corev1.Pod {
	t.Helper()
	list, err := e.cs.CoreV1().Pods(ns).List(t.Context(), metav1.ListOptions{LabelSelector: selector, FieldSelector: "status.phase=Running"})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// userKubeconfig writes a kubeconfig of a user bound to the built-in
// ClusterRole role in namespace.
func (e *env) userKubeconfig(t *testing.T, user, ns, role string) string {
	t.Helper()
	e.kubectl(t, "", "-n", ns, "create", "rolebinding", user+"-"+role, "--clusterrole="+role, "--user="+user)
	cfg, err := e.cp.UserConfig(user)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), user+".kubeconfig")
	if err := testenv.WriteKubeconfig(path, cfg, ns); err != nil {
		t.Fatal(err)
	}
	return path
}

// serviceAddress is host:port of a Service's ClusterIP and first port.
func (e *env) serviceAddress(t *testing.T, ns, name string) string {
	t.Helper()
	svc, err := e.cs.CoreV1().Services(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%s:%d", svc.Spec.ClusterIP, svc.Spec.Ports[0].Port)
}

// checkHardened checks in the container's process, as the kernel sees it,
// what the manifests ask for: a user other than root, no capabilities, no
// privilege escalation, seccomp, and a read-only root filesystem.
func (e *env) checkHardened(t *testing.T, pod corev1.Pod) {
	t.Helper()
	if len(pod.Status.ContainerStatuses) == 0 {
		t.Fatalf("pod %s has no container status", pod.Name)
	}
	pid, err := e.cp.RealNode().ContainerPID(t.Context(), pod.Status.ContainerStatuses[0].ContainerID)
	if err != nil {
		t.Fatal(err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	fields := map[string]string{}
	for _, l := range strings.Split(string(status), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			fields[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	for key, want := range map[string]string{
		"Uid":        "65532 65532 65532 65532",
		"Gid":        "65532 65532 65532 65532",
		"CapEff":     "0000000000000000",
		"CapPrm":     "0000000000000000",
		"CapBnd":     "0000000000000000",
		"NoNewPrivs": "1",
		"Seccomp":    "2",
	} {
		if fields[key] != want {
			t.Errorf("pod %s: %s is %q, want %q", pod.Name, key, fields[key], want)
		}
	}
	mounts, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 5 && f[4] == "/" {
			if !strings.Contains(","+f[5]+",", ",ro,") {
				t.Errorf("pod %s: the root filesystem is mounted %s, want ro", pod.Name, f[5])
			}
			return
		}
	}
	t.Errorf("pod %s: no root mount in its mountinfo", pod.Name)
}
