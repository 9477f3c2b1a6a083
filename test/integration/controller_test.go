package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	logsapi "k8s.io/component-base/logs/api/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeopencode/share/cmd/controller/app"
	"github.com/kubeopencode/share/internal/testenv"
	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
	"github.com/kubeopencode/share/pkg/controller"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/secrets"
)

const (
	// controllerUser is the identity the controller runs as, bound to the
	// ClusterRole and Role of artifacts/controller: the tests prove that
	// RBAC is enough.
	controllerUser = "system:serviceaccount:kubeopencode-system:kubeopencode-controller"
	publicURL      = "https://share.example.com"
	// poll is the interval of every wait.
	poll = 100 * time.Millisecond
)

// TestController runs the controller in-process against a real control plane
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler and a
// stand-in node) and walks an Agent's workload and share link through their
// states. The subtests share the control plane and run in order.
func TestController(t *testing.T) {
	// The command applies the logging configuration each time it starts.
	logsapi.ReapplyHandling = logsapi.ReapplyHandlingIgnoreUnchanged

	// TestMain started the control plane and the stand-in node and
	// installed the CRDs of artifacts/crd.
	ctx := t.Context()
	cp := shared.cp
	scheme := clientscheme.Scheme
	c, err := client.New(cp.Config(), client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ensureNamespace(t, c, "kubeopencode-system")
	applyYAML(t, c, filepath.Join(shared.root, "artifacts", "controller", "serviceaccount.yaml"))
	applyYAML(t, c, filepath.Join(shared.root, "artifacts", "controller", "rbac.yaml"))
	// The Deployment is only validated: the controller runs in-process.
	applyYAML(t, c, filepath.Join(shared.root, "artifacts", "controller", "deployment.yaml"), client.DryRunAll)
	userConfig, err := cp.UserConfig(controllerUser, "system:serviceaccounts", "system:serviceaccounts:kubeopencode-system")
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "controller.kubeconfig")
	if err := testenv.WriteKubeconfig(kubeconfig, userConfig, ""); err != nil {
		t.Fatal(err)
	}

	// The controller outlives each subtest: its cleanup belongs to this test.
	top := t
	ctl := startController(top, kubeconfig)
	env := &testEnv{t: t, c: c}

	t.Run("the readiness probe passes once the caches are synced", func(t *testing.T) {
		e := &testEnv{t: t, c: c}
		probes := ctl.probes
		e.waitFor("/readyz and /healthz", func(ctx context.Context) (bool, error) {
			for _, path := range []string{"/readyz", "/healthz"} {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+probes+path, nil)
				if err != nil {
					return false, err
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return false, nil
				}
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return false, nil
				}
			}
			return true, nil
		})
	})

	t.Run("deployment available on the node makes the Agent Ready", func(t *testing.T) {
		e := env.with(t)
		a := e.createAgent(newAgent(e.ns, "alpha", nil))
		agent := e.waitForCondition(a, v1alpha1.ConditionReady, metav1.ConditionTrue, controller.ReasonDeploymentAvailable)
		if agent.Status.ObservedGeneration != agent.Generation {
			t.Errorf("observedGeneration = %d, want %d", agent.Status.ObservedGeneration, agent.Generation)
		}
		e.expectCondition(agent, v1alpha1.ConditionShareReady, metav1.ConditionFalse, share.ReasonDisabled)

		d := &appsv1.Deployment{}
		e.get(a.Name, d)
		if !metav1.IsControlledBy(d, agent) || *d.Spec.Replicas != 1 {
			t.Errorf("Deployment: owners %+v, replicas %d", d.OwnerReferences, *d.Spec.Replicas)
		}
		if d.Spec.Template.Labels[share.LabelAgent] != a.Name {
			t.Errorf("pod labels = %v", d.Spec.Template.Labels)
		}
		if cs := d.Spec.Template.Spec.Containers; len(cs) != 1 || cs[0].Name != controller.ContainerName || cs[0].Image != a.Spec.Image {
			t.Errorf("containers = %+v", cs)
		}
		pods := &corev1.PodList{}
		if err := c.List(ctx, pods, client.InNamespace(e.ns), client.MatchingLabels{share.LabelAgent: a.Name}); err != nil || len(pods.Items) == 0 {
			t.Errorf("pods of the Agent: %d, %v", len(pods.Items), err)
		}
	})

	t.Run("enable and disable", func(t *testing.T) {
		e := env.with(t)
		a := e.createAgent(newAgent(e.ns, "alpha", nil))
		e.waitForCondition(a, v1alpha1.ConditionReady, metav1.ConditionTrue, controller.ReasonDeploymentAvailable)

		e.updateAgent(a, func(a *v1alpha1.Agent) { a.Spec.Share = &v1alpha1.ShareSpec{Enabled: true} })
		agent := e.waitForCondition(a, v1alpha1.ConditionShareReady, metav1.ConditionTrue, share.ReasonActive)
		want := &v1alpha1.ShareStatus{SecretName: a.Name + "-share", Active: true, URL: publicURL, Mode: v1alpha1.ShareModeEdit}
		if s := agent.Status.Share; s == nil || !equality.Semantic.DeepEqual(s, want) {
			t.Errorf("status.share = %+v, want %+v", s, want)
		}
		secret := e.shareSecret(a.Name)
		ref := metav1.GetControllerOf(secret)
		if ref == nil || ref.UID != agent.UID || ref.Kind != "Agent" {
			t.Errorf("Secret owner references = %+v", secret.OwnerReferences)
		}
		token := string(secret.Data[share.SecretTokenKey])
		if len(token) != 43 || !share.ValidToken(token) {
			t.Errorf("token has %d characters", len(token))
		}
		if secret.Labels[share.LabelShareSecret] != "true" || secret.Annotations[share.AnnotationAgentUID] != string(agent.UID) {
			t.Errorf("Secret labels %v, annotations %v", secret.Labels, secret.Annotations)
		}
		e.waitForEvent(a.Name, controller.EventShareEnabled, corev1.EventTypeNormal)
		e.expectNoTokenIn(agent, token)

		// A rotation, as the agents/share API makes it, is announced.
		if _, rotated, err := secrets.Rotate(ctx, c, signingKeys(t), agent, "", secret); err != nil {
			t.Fatal(err)
		} else {
			token = rotated
		}
		e.waitForEvent(a.Name, controller.EventShareRotated, corev1.EventTypeNormal)
		agent = e.waitForCondition(a, v1alpha1.ConditionShareReady, metav1.ConditionTrue, share.ReasonActive)
		e.expectNoTokenIn(agent, token)
		if got := string(e.shareSecret(a.Name).Data[share.SecretTokenKey]); got != token {
			t.Error("the controller changed the rotated token")
		}

		e.updateAgent(a, func(a *v1alpha1.Agent) { a.Spec.Share.Enabled = false })
		agent = e.waitForCondition(a, v1alpha1.ConditionShareReady, metav1.ConditionFalse, share.ReasonDisabled)
		if s := agent.Status.Share; s == nil || s.Active || s.SecretName != "" {
			t.Errorf("status.share = %+v, want inactive without a Secret", s)
		}
		e.waitForGone(a.Name+"-share", &corev1.Secret{})
		e.waitForEvent(a.Name, controller.EventShareDisabled, corev1.EventTypeNormal)
	})

	t.Run("expiry", func(t *testing.T) {
		e := env.with(t)
		a := e.createAgent(newAgent(e.ns, "alpha", nil))
		e.waitForCondition(a, v1alpha1.ConditionReady, metav1.ConditionTrue, controller.ReasonDeploymentAvailable)

		// Timestamps have whole seconds.
		expiresAt := metav1.NewTime(time.Now().Add(5 * time.Second).Truncate(time.Second))
		e.updateAgent(a, func(a *v1alpha1.Agent) {
			a.Spec.Share = &v1alpha1.ShareSpec{Enabled: true, ShareLinkSpec: v1alpha1.ShareLinkSpec{ExpiresAt: &expiresAt}}
		})
		agent := e.waitForCondition(a, v1alpha1.ConditionShareReady, metav1.ConditionTrue, share.ReasonActive)
		if s := agent.Status.Share; s == nil || s.ExpiresAt == nil || !s.ExpiresAt.Equal(&expiresAt) {
			t.Errorf("status.share = %+v, want expiresAt %s", s, expiresAt)
		}
		token := string(e.shareSecret(a.Name).Data[share.SecretTokenKey])

		// No sleeping: the controller requeues itself for the expiry.
		agent = e.waitForConditionWithin(a, time.Until(expiresAt.Time)+10*time.Second,
			v1alpha1.ConditionShareReady, metav1.ConditionFalse, share.ReasonExpired)
		if now := time.Now(); now.Before(expiresAt.Time) {
			t.Errorf("expired at %s, before expiresAt %s", now, expiresAt)
		}
		if s := agent.Status.Share; s == nil || s.Active || s.SecretName == "" {
			t.Errorf("status.share = %+v, want inactive", s)
		}
		e.waitForEvent(a.Name, controller.EventShareExpired, corev1.EventTypeNormal)
		// The Secret stays, with its token, until sharing is disabled.
		if got := string(e.shareSecret(a.Name).Data[share.SecretTokenKey]); got != token {
			t.Error("the token changed at expiry")
		}
	})

	t.Run("deployment not available makes the share AgentNotReady", func(t *testing.T) {
		e := env.with(t)
		a := newAgent(e.ns, "beta", &v1alpha1.ShareSpec{Enabled: true})
		// No node has room for this: the pod stays pending.
		a.Spec.Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100000")}
		a = e.createAgent(a)
		agent := e.waitForCondition(a, v1alpha1.ConditionShareReady, metav1.ConditionFalse, share.ReasonAgentNotReady)
		e.expectCondition(agent, v1alpha1.ConditionReady, metav1.ConditionFalse, controller.ReasonDeploymentUnavailable)
		if s := agent.Status.Share; s == nil || s.Active || s.SecretName != a.Name+"-share" {
			t.Errorf("status.share = %+v", s)
		}
		e.shareSecret(a.Name)
	})

	t.Run("a foreign Secret is not adopted", func(t *testing.T) {
		e := env.with(t)
		foreign := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "gamma-share"},
			Data:       map[string][]byte{"token": []byte("someone else's")},
		}
		if err := c.Create(ctx, foreign); err != nil {
			t.Fatal(err)
		}
		a := e.createAgent(newAgent(e.ns, "gamma", &v1alpha1.ShareSpec{Enabled: true}))
		agent := e.waitForCondition(a, v1alpha1.ConditionShareReady, metav1.ConditionFalse, share.ReasonSecretConflict)
		if s := agent.Status.Share; s == nil || s.Active || s.SecretName != "" {
			t.Errorf("status.share = %+v", s)
		}
		e.waitForEvent(a.Name, controller.EventSecretConflict, corev1.EventTypeWarning)

		// Another reconcile leaves the Secret alone too.
		e.updateAgent(a, func(a *v1alpha1.Agent) { a.Spec.Share.AllowedIPs = []v1alpha1.IPOrCIDR{"10.0.0.0/8"} })
		e.waitForObservedGeneration(a)
		got := &corev1.Secret{}
		e.get(foreign.Name, got)
		if got.ResourceVersion != foreign.ResourceVersion || len(got.OwnerReferences) != 0 || len(got.Labels) != 0 ||
			string(got.Data["token"]) != "someone else's" {
			t.Errorf("the foreign Secret was changed: %+v", got)
		}

		// Once it is gone, the Agent gets its own.
		if err := c.Delete(ctx, foreign); err != nil {
			t.Fatal(err)
		}
		e.updateAgent(a, func(a *v1alpha1.Agent) { a.Spec.Share.AllowedIPs = nil })
		e.waitFor("a share Secret of the Agent", func(ctx context.Context) (bool, error) {
			s := &corev1.Secret{}
			if err := c.Get(ctx, types.NamespacedName{Namespace: e.ns, Name: "gamma-share"}, s); err != nil {
				return false, client.IgnoreNotFound(err)
			}
			return share.OwnedBy(s, agent.UID), nil
		})
	})

	t.Run("restarts keep the token", func(t *testing.T) {
		e := env.with(t)
		a := e.createAgent(newAgent(e.ns, "delta", &v1alpha1.ShareSpec{Enabled: true}))
		e.waitForCondition(a, v1alpha1.ConditionShareReady, metav1.ConditionTrue, share.ReasonActive)
		token := string(e.shareSecret(a.Name).Data[share.SecretTokenKey])

		// Stopped after the Secret, with a change waiting for it.
		ctl.stop(t)
		e.updateAgent(a, func(a *v1alpha1.Agent) { a.Spec.Share.AllowedIPs = []v1alpha1.IPOrCIDR{"192.168.1.0/24"} })
		ctl = startController(top, kubeconfig)
		e.waitForObservedGeneration(a)

		// Stopped mid-way: an Agent created while the controller is down
		// gets its Secret, and the controller stops before it is done.
		b := e.createAgent(newAgent(e.ns, "epsilon", nil))
		ctl.stop(t)
		e.updateAgent(b, func(b *v1alpha1.Agent) { b.Spec.Share = &v1alpha1.ShareSpec{Enabled: true} })
		ctl = startController(top, kubeconfig)
		var first string
		e.waitFor("the Secret of the second Agent", func(ctx context.Context) (bool, error) {
			s := &corev1.Secret{}
			err := c.Get(ctx, types.NamespacedName{Namespace: e.ns, Name: "epsilon-share"}, s)
			first = string(s.Data[share.SecretTokenKey])
			return err == nil, client.IgnoreNotFound(err)
		})
		ctl.stop(t)
		ctl = startController(top, kubeconfig)
		e.waitForCondition(b, v1alpha1.ConditionShareReady, metav1.ConditionTrue, share.ReasonActive)
		e.waitForObservedGeneration(b)

		for name, want := range map[string]string{"delta": token, "epsilon": first} {
			if got := string(e.shareSecret(name).Data[share.SecretTokenKey]); got != want {
				t.Errorf("Agent %s: the token changed across restarts", name)
			}
		}
		secrets := &corev1.SecretList{}
		if err := c.List(ctx, secrets, client.InNamespace(e.ns), client.MatchingLabels(share.SecretSelector())); err != nil {
			t.Fatal(err)
		}
		if len(secrets.Items) != 2 {
			t.Errorf("%d share Secrets, want 2", len(secrets.Items))
		}
	})

	t.Run("deleting the Agent collects its Secret and Deployment", func(t *testing.T) {
		e := env.with(t)
		a := e.createAgent(newAgent(e.ns, "zeta", &v1alpha1.ShareSpec{Enabled: true}))
		e.waitForCondition(a, v1alpha1.ConditionShareReady, metav1.ConditionTrue, share.ReasonActive)
		if err := c.Delete(ctx, a, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
			t.Fatal(err)
		}
		// The garbage collector of kube-controller-manager deletes them; it
		// may first have to discover the Agent resource.
		e.waitForGoneWithin(2*time.Minute, a.Name, &appsv1.Deployment{})
		e.waitForGoneWithin(2*time.Minute, a.Name+"-share", &corev1.Secret{})
	})
}

// runningController is the controller running in-process.
type runningController struct {
	cancel context.CancelFunc
	done   chan error
	// probes is the address of /healthz and /readyz.
	probes string
}

// startController runs the controller's command as the binary would, with
// leader election, as the controller's ServiceAccount.
func startController(t *testing.T, kubeconfig string) *runningController {
	t.Helper()
	// A free loopback port for the probes.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	probes := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	o := app.NewOptions()
	// The controller starts more than once in this process.
	o.SkipControllerNameValidation = true
	cmd := app.NewControllerCommand(o)
	cmd.SetArgs([]string{
		"--kubeconfig=" + kubeconfig,
		"--leader-elect=true",
		"--leader-election-namespace=kubeopencode-system",
		"--metrics-bind-address=0",
		"--health-probe-bind-address=" + probes,
		"--public-url=" + publicURL,
	})
	cmd.SetOut(io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningController{cancel: cancel, done: make(chan error, 1), probes: probes}
	go func() { r.done <- cmd.ExecuteContext(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop stops the controller and waits for it to return. Stopping twice is
// fine.
func (r *runningController) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err, ok := <-r.done:
		if !ok {
			return
		}
		close(r.done)
		if err != nil {
			t.Errorf("controller: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("the controller did not stop within 30s")
	}
}

// testEnv holds what the subtests share.
type testEnv struct {
	t  *testing.T
	c  client.Client
	ns string
}

// with returns the environment of a subtest, in a namespace of its own.
func (e *testEnv) with(t *testing.T) *testEnv {
	t.Helper()
	return &testEnv{t: t, c: e.c, ns: newNamespace(t)}
}

func newAgent(ns, name string, s *v1alpha1.ShareSpec) *v1alpha1.Agent {
	return &v1alpha1.Agent{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.AgentSpec{
			Image:   "busybox:1.36",
			Command: []string{"sleep", "infinity"},
			Share:   s,
		},
	}
}

func (e *testEnv) createAgent(a *v1alpha1.Agent) *v1alpha1.Agent {
	e.t.Helper()
	if err := e.c.Create(e.t.Context(), a); err != nil {
		e.t.Fatalf("creating Agent %s: %v", a.Name, err)
	}
	return a
}

// updateAgent changes an Agent's spec, retrying on conflicts.
func (e *testEnv) updateAgent(a *v1alpha1.Agent, mutate func(*v1alpha1.Agent)) {
	e.t.Helper()
	e.waitFor("updating Agent "+a.Name, func(ctx context.Context) (bool, error) {
		current := &v1alpha1.Agent{}
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(a), current); err != nil {
			return false, err
		}
		mutate(current)
		err := e.c.Update(ctx, current)
		if apierrors.IsConflict(err) {
			return false, nil
		}
		return err == nil, err
	})
}

func (e *testEnv) get(name string, obj client.Object) {
	e.t.Helper()
	if err := e.c.Get(e.t.Context(), types.NamespacedName{Namespace: e.ns, Name: name}, obj); err != nil {
		e.t.Fatalf("reading %s: %v", name, err)
	}
}

func (e *testEnv) shareSecret(agent string) *corev1.Secret {
	e.t.Helper()
	s := &corev1.Secret{}
	e.get(share.SecretName(agent), s)
	return s
}

func (e *testEnv) waitFor(what string, cond func(context.Context) (bool, error)) {
	e.t.Helper()
	e.waitForWithin(30*time.Second, what, cond)
}

func (e *testEnv) waitForWithin(timeout time.Duration, what string, cond func(context.Context) (bool, error)) {
	e.t.Helper()
	if err := wait.PollUntilContextTimeout(e.t.Context(), poll, timeout, true, cond); err != nil {
		e.t.Fatalf("waiting for %s: %v", what, err)
	}
}

// waitForCondition waits until the Agent has the condition with the status
// and reason, and returns the Agent.
func (e *testEnv) waitForCondition(a *v1alpha1.Agent, conditionType string, status metav1.ConditionStatus, reason string) *v1alpha1.Agent {
	e.t.Helper()
	return e.waitForConditionWithin(a, 60*time.Second, conditionType, status, reason)
}

func (e *testEnv) waitForConditionWithin(a *v1alpha1.Agent, timeout time.Duration, conditionType string, status metav1.ConditionStatus, reason string) *v1alpha1.Agent {
	e.t.Helper()
	agent := &v1alpha1.Agent{}
	var last *metav1.Condition
	err := wait.PollUntilContextTimeout(e.t.Context(), poll, timeout, true, func(ctx context.Context) (bool, error) {
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(a), agent); err != nil {
			return false, err
		}
		last = meta.FindStatusCondition(agent.Status.Conditions, conditionType)
		return last != nil && last.Status == status && last.Reason == reason && last.ObservedGeneration == agent.Generation, nil
	})
	if err != nil {
		e.t.Fatalf("waiting for %s %s=%s/%s: %v; last %+v", a.Name, conditionType, status, reason, err, last)
	}
	return agent
}

func (e *testEnv) expectCondition(agent *v1alpha1.Agent, conditionType string, status metav1.ConditionStatus, reason string) {
	e.t.Helper()
	c := meta.FindStatusCondition(agent.Status.Conditions, conditionType)
	if c == nil || c.Status != status || c.Reason != reason {
		e.t.Errorf("Agent %s: %s = %+v, want %s/%s", agent.Name, conditionType, c, status, reason)
	}
}

func (e *testEnv) waitForObservedGeneration(a *v1alpha1.Agent) {
	e.t.Helper()
	e.waitFor("observedGeneration of "+a.Name, func(ctx context.Context) (bool, error) {
		agent := &v1alpha1.Agent{}
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(a), agent); err != nil {
			return false, err
		}
		return agent.Status.ObservedGeneration == agent.Generation, nil
	})
}

func (e *testEnv) waitForGone(name string, obj client.Object) {
	e.t.Helper()
	e.waitForGoneWithin(30*time.Second, name, obj)
}

func (e *testEnv) waitForGoneWithin(timeout time.Duration, name string, obj client.Object) {
	e.t.Helper()
	e.waitForWithin(timeout, fmt.Sprintf("%T %s to be deleted", obj, name), func(ctx context.Context) (bool, error) {
		err := e.c.Get(ctx, types.NamespacedName{Namespace: e.ns, Name: name}, obj)
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
}

// waitForEvent waits for an Event on the Agent with the reason and type.
func (e *testEnv) waitForEvent(agent, reason, eventType string) {
	e.t.Helper()
	e.waitFor(fmt.Sprintf("Event %s on %s", reason, agent), func(ctx context.Context) (bool, error) {
		list := &eventsv1.EventList{}
		if err := e.c.List(ctx, list, client.InNamespace(e.ns)); err != nil {
			return false, err
		}
		for _, ev := range list.Items {
			if ev.Regarding.Kind == "Agent" && ev.Regarding.Name == agent && ev.Reason == reason && ev.Type == eventType {
				return true, nil
			}
		}
		return false, nil
	})
}

// expectNoTokenIn checks that neither the Agent nor the Events of its
// namespace hold the token.
func (e *testEnv) expectNoTokenIn(agent *v1alpha1.Agent, token string) {
	e.t.Helper()
	list := &eventsv1.EventList{}
	if err := e.c.List(e.t.Context(), list, client.InNamespace(e.ns)); err != nil {
		e.t.Fatal(err)
	}
	for _, ev := range list.Items {
		if strings.Contains(ev.Note, token) {
			e.t.Errorf("Event %s holds the token", ev.Name)
		}
	}
	if strings.Contains(fmt.Sprintf("%+v", agent), token) {
		e.t.Error("the Agent holds the token")
	}
	if h := share.TokenHash(token); strings.Contains(fmt.Sprintf("%+v", agent), h[:16]) {
		e.t.Error("the Agent holds a hash of the token")
	}
}

func ensureNamespace(t *testing.T, c client.Client, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Create(t.Context(), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
}

// applyYAML creates the objects of a multi-document YAML file, with strict
// field validation.
func applyYAML(t *testing.T, c client.Client, path string, opts ...client.CreateOption) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		obj := &unstructured.Unstructured{}
		if err := dec.Decode(&obj.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return
			}
			t.Fatalf("decoding %s: %v", path, err)
		}
		if len(obj.Object) == 0 {
			continue
		}
		if err := c.Create(t.Context(), obj, append([]client.CreateOption{client.FieldValidation("Strict")}, opts...)...); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating %s %s from %s: %v", obj.GetKind(), obj.GetName(), path, err)
		}
	}
}
