package controller

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/tools/events"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/secrets"
	"github.com/kubeopencode/share/pkg/share/sharetest"
)

// harness runs the reconciler of one Agent over the fake client, with a fake
// clock and a fake recorder. The integration tests run it against a real API
// server; this test walks the condition and Event logic through time.
type harness struct {
	t      *testing.T
	client client.Client
	clock  *clocktesting.FakePassiveClock
	events *events.FakeRecorder
	r      *AgentReconciler
	key    types.NamespacedName
}

func newHarness(t *testing.T, start time.Time, objs ...client.Object) *harness {
	t.Helper()
	scheme := clientscheme.Scheme
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithStatusSubresource(&v1alpha1.Agent{}, &appsv1.Deployment{}).Build()
	h := &harness{
		t: t, client: c,
		clock:  clocktesting.NewFakePassiveClock(start),
		events: events.NewFakeRecorder(16),
		key:    types.NamespacedName{Namespace: "default", Name: "team-agent"},
	}
	h.r = NewAgentReconciler(c, c, h.events, Config{Clock: h.clock, PublicURL: "https://share.example.com", Keys: sharetest.Keys()})
	return h
}

// reconcile runs one reconcile and returns the Agent and the Events emitted.
func (h *harness) reconcile() (reconcile.Result, *v1alpha1.Agent, []string) {
	h.t.Helper()
	res, err := h.r.Reconcile(context.Background(), reconcile.Request{NamespacedName: h.key})
	if err != nil {
		h.t.Fatalf("Reconcile: %v", err)
	}
	agent := &v1alpha1.Agent{}
	if err := h.client.Get(context.Background(), h.key, agent); err != nil {
		h.t.Fatal(err)
	}
	var got []string
	for {
		select {
		case e := <-h.events.Events:
			got = append(got, e)
		default:
			return res, agent, got
		}
	}
}

func (h *harness) update(obj client.Object, mutate func()) {
	h.t.Helper()
	if err := h.client.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
		h.t.Fatal(err)
	}
	mutate()
	if err := h.client.Update(context.Background(), obj); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) secret() *corev1.Secret {
	h.t.Helper()
	s := &corev1.Secret{}
	if err := h.client.Get(context.Background(), types.NamespacedName{Namespace: "default", Name: "team-agent-share"}, s); err != nil {
		h.t.Fatal(err)
	}
	return s
}

func (h *harness) agent() *v1alpha1.Agent {
	h.t.Helper()
	a := &v1alpha1.Agent{}
	if err := h.client.Get(context.Background(), h.key, a); err != nil {
		h.t.Fatal(err)
	}
	return a
}

func conditionReason(agent *v1alpha1.Agent, conditionType string) string {
	if c := meta.FindStatusCondition(agent.Status.Conditions, conditionType); c != nil {
		return string(c.Status) + "/" + c.Reason
	}
	return ""
}

// reasons returns the reason of each Event, in order.
func reasons(evs []string) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = strings.Fields(e)[1]
	}
	return out
}

func TestReconcileShareLifecycle(t *testing.T) {
	start := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	agent := testAgent()
	expiresAt := metav1.NewTime(start.Add(time.Hour))
	agent.Spec.Share = &v1alpha1.ShareSpec{Enabled: true, ShareLinkSpec: v1alpha1.ShareLinkSpec{ExpiresAt: &expiresAt}}
	h := newHarness(t, start, agent)

	steps := []struct {
		name string
		// before changes the world, then the clock moves by advance.
		before      func()
		advance     time.Duration
		wantReady   string
		wantShare   string
		wantActive  bool
		wantEvents  []string
		wantRequeue time.Duration
	}{
		{
			name:      "enable before the agent is ready",
			wantReady: "False/DeploymentUnavailable", wantShare: "False/AgentNotReady",
			wantEvents: []string{EventShareEnabled}, wantRequeue: time.Hour,
		},
		{
			name: "deployment becomes available",
			before: func() {
				d := &appsv1.Deployment{}
				if err := h.client.Get(context.Background(), h.key, d); err != nil {
					t.Fatal(err)
				}
				d.Status.AvailableReplicas = 1
				d.Status.Conditions = []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue}}
				if err := h.client.Status().Update(context.Background(), d); err != nil {
					t.Fatal(err)
				}
			},
			advance:   time.Minute,
			wantReady: "True/DeploymentAvailable", wantShare: "True/Active", wantActive: true,
			wantRequeue: 59 * time.Minute,
		},
		{
			name: "nothing changed", advance: 58 * time.Minute,
			wantReady: "True/DeploymentAvailable", wantShare: "True/Active", wantActive: true,
			wantRequeue: time.Minute,
		},
		{
			name: "token rotated",
			before: func() {
				if _, _, err := secrets.Rotate(context.Background(), h.client, sharetest.Keys(), h.agent(), "", h.secret()); err != nil {
					t.Fatal(err)
				}
			},
			wantReady: "True/DeploymentAvailable", wantShare: "True/Active", wantActive: true,
			wantEvents: []string{EventShareRotated}, wantRequeue: time.Minute,
		},
		{
			name: "clock reaches expiry", advance: time.Minute,
			wantReady: "True/DeploymentAvailable", wantShare: "False/Expired",
			wantEvents: []string{EventShareExpired},
		},
		{
			name: "expired stays quiet", advance: time.Hour,
			wantReady: "True/DeploymentAvailable", wantShare: "False/Expired",
		},
		{
			name: "expiry extended",
			before: func() {
				a := &v1alpha1.Agent{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "team-agent"}}
				h.update(a, func() {
					later := metav1.NewTime(h.clock.Now().Add(30 * time.Minute))
					a.Spec.Share.ExpiresAt = &later
				})
			},
			wantReady: "True/DeploymentAvailable", wantShare: "True/Active", wantActive: true,
			wantRequeue: 30 * time.Minute,
		},
		{
			name: "disable",
			before: func() {
				a := &v1alpha1.Agent{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "team-agent"}}
				h.update(a, func() { a.Spec.Share.Enabled = false })
			},
			wantReady: "True/DeploymentAvailable", wantShare: "False/Disabled",
			wantEvents: []string{EventShareDisabled},
		},
		{
			name:      "disabled stays quiet",
			wantReady: "True/DeploymentAvailable", wantShare: "False/Disabled",
		},
		{
			name: "enable again gets a new token",
			before: func() {
				a := &v1alpha1.Agent{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "team-agent"}}
				h.update(a, func() { a.Spec.Share.Enabled, a.Spec.Share.ExpiresAt = true, nil })
			},
			wantReady: "True/DeploymentAvailable", wantShare: "True/Active", wantActive: true,
			wantEvents: []string{EventShareEnabled},
		},
	}
	var lastToken string
	for _, step := range steps {
		if step.before != nil {
			step.before()
		}
		h.clock.SetTime(h.clock.Now().Add(step.advance))
		res, got, evs := h.reconcile()
		if r := conditionReason(got, v1alpha1.ConditionReady); r != step.wantReady {
			t.Errorf("%s: Ready = %s, want %s", step.name, r, step.wantReady)
		}
		if r := conditionReason(got, v1alpha1.ConditionShareReady); r != step.wantShare {
			t.Errorf("%s: ShareReady = %s, want %s", step.name, r, step.wantShare)
		}
		if got.Status.Share == nil || got.Status.Share.Active != step.wantActive {
			t.Errorf("%s: status.share = %+v, want active %v", step.name, got.Status.Share, step.wantActive)
		}
		if got.Status.ObservedGeneration != got.Generation {
			t.Errorf("%s: observedGeneration = %d, want %d", step.name, got.Status.ObservedGeneration, got.Generation)
		}
		if r := reasons(evs); strings.Join(r, ",") != strings.Join(step.wantEvents, ",") {
			t.Errorf("%s: events = %v, want %v", step.name, evs, step.wantEvents)
		}
		if res.RequeueAfter != step.wantRequeue {
			t.Errorf("%s: RequeueAfter = %v, want %v", step.name, res.RequeueAfter, step.wantRequeue)
		}
		if step.wantShare != "False/Disabled" {
			token := string(h.secret().Data[share.SecretTokenKey])
			if strings.Contains(strings.Join(evs, " "), token) {
				t.Errorf("%s: an Event holds the token", step.name)
			}
			lastToken = token
		}
	}
	if !share.ValidToken(lastToken) {
		t.Errorf("last token %q", lastToken)
	}
}

func TestReconcileForeignSecret(t *testing.T) {
	agent := testAgent()
	agent.Spec.Share = &v1alpha1.ShareSpec{Enabled: true}
	foreign := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "team-agent-share"},
		Data:       map[string][]byte{"token": []byte("mine")},
	}
	h := newHarness(t, time.Now(), agent, foreign)
	before := h.secret()

	for i, wantEvents := range [][]string{{EventSecretConflict}, nil} {
		res, got, evs := h.reconcile()
		if r := conditionReason(got, v1alpha1.ConditionShareReady); r != "False/SecretConflict" {
			t.Errorf("reconcile %d: ShareReady = %s", i, r)
		}
		if got.Status.Share == nil || got.Status.Share.Active || got.Status.Share.SecretName != "" {
			t.Errorf("reconcile %d: status.share = %+v", i, got.Status.Share)
		}
		if r := reasons(evs); strings.Join(r, ",") != strings.Join(wantEvents, ",") || (len(evs) > 0 && !strings.HasPrefix(evs[0], corev1.EventTypeWarning)) {
			t.Errorf("reconcile %d: events = %v, want Warning %v", i, evs, wantEvents)
		}
		if res.RequeueAfter != conflictRecheck {
			t.Errorf("reconcile %d: RequeueAfter = %v", i, res.RequeueAfter)
		}
	}
	after := h.secret()
	if after.ResourceVersion != before.ResourceVersion || len(after.OwnerReferences) != 0 {
		t.Errorf("the foreign Secret was changed: %+v", after.ObjectMeta)
	}

	// Disabling leaves a foreign Secret alone too.
	a := &v1alpha1.Agent{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "team-agent"}}
	h.update(a, func() { a.Spec.Share.Enabled = false })
	_, got, _ := h.reconcile()
	if r := conditionReason(got, v1alpha1.ConditionShareReady); r != "False/Disabled" {
		t.Errorf("after disable: ShareReady = %s", r)
	}
	h.secret()
}

func TestReconcileForeignDeployment(t *testing.T) {
	agent := testAgent()
	foreign := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "team-agent"}}
	h := newHarness(t, time.Now(), agent, foreign)
	res, got, evs := h.reconcile()
	if r := conditionReason(got, v1alpha1.ConditionReady); r != "False/DeploymentConflict" {
		t.Errorf("Ready = %s", r)
	}
	if r := reasons(evs); len(r) != 1 || r[0] != ReasonDeploymentConflict {
		t.Errorf("events = %v", evs)
	}
	if res.RequeueAfter != conflictRecheck {
		t.Errorf("RequeueAfter = %v", res.RequeueAfter)
	}
	d := &appsv1.Deployment{}
	if err := h.client.Get(context.Background(), h.key, d); err != nil || len(d.OwnerReferences) != 0 {
		t.Errorf("foreign Deployment: %+v, %v", d.ObjectMeta, err)
	}
}

func TestReconcileEventsFollowTheStatus(t *testing.T) {
	unavailable := apierrors.NewServiceUnavailable("try later")
	tests := []struct {
		name string
		// failDeployment makes every Deployment create fail.
		failDeployment bool
		// failStatus makes the first status write fail.
		failStatus bool
		// wantEvents are the Events of the first and second reconcile.
		wantEvents [2][]string
	}{
		{
			name:           "a failed phase does not hold back the Events of the status written",
			failDeployment: true,
			wantEvents:     [2][]string{{EventShareDisabled}, nil},
		},
		{
			name:       "a failed status write holds back its Events until the retry",
			failStatus: true,
			wantEvents: [2][]string{nil, {EventShareDisabled}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			agent := testAgent()
			agent.Generation = 2
			agent.Spec.Share = &v1alpha1.ShareSpec{Enabled: false}
			agent.Status.Conditions = []metav1.Condition{{
				Type: v1alpha1.ConditionShareReady, Status: metav1.ConditionTrue, Reason: share.ReasonActive,
				ObservedGeneration: 1, LastTransitionTime: metav1.Now(),
			}}
			scheme := clientscheme.Scheme
			statusFailures := 0
			if tc.failStatus {
				statusFailures = 1
			}
			c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(agent).
				WithStatusSubresource(&v1alpha1.Agent{}).
				WithInterceptorFuncs(interceptor.Funcs{
					Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
						if _, ok := obj.(*appsv1.Deployment); ok && tc.failDeployment {
							return unavailable
						}
						return c.Create(ctx, obj, opts...)
					},
					SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
						if statusFailures > 0 {
							statusFailures--
							return unavailable
						}
						return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
					},
				}).Build()
			rec := events.NewFakeRecorder(16)
			r := NewAgentReconciler(c, c, rec, Config{Keys: sharetest.Keys()})
			for i, want := range tc.wantEvents {
				_, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(agent)})
				if wantErr := tc.failDeployment || (tc.failStatus && i == 0); (err != nil) != wantErr {
					t.Errorf("reconcile %d: error %v, want an error: %v", i, err, wantErr)
				}
				var got []string
				for len(rec.Events) > 0 {
					got = append(got, <-rec.Events)
				}
				if strings.Join(reasons(got), ",") != strings.Join(want, ",") {
					t.Errorf("reconcile %d: events %v, want %v", i, got, want)
				}
			}
			stored := &v1alpha1.Agent{}
			if err := c.Get(context.Background(), client.ObjectKeyFromObject(agent), stored); err != nil {
				t.Fatal(err)
			}
			if r := conditionReason(stored, v1alpha1.ConditionShareReady); r != "False/Disabled" {
				t.Errorf("ShareReady = %s", r)
			}
			// A failed phase leaves observedGeneration behind.
			if got, want := stored.Status.ObservedGeneration, map[bool]int64{true: 0, false: 2}[tc.failDeployment]; got != want {
				t.Errorf("observedGeneration = %d, want %d", got, want)
			}
		})
	}
}

// The API server refuses a Deployment with an environment variable named
// with "=", which the Agent's schema lets through.
func refuseBadEnv(ctx context.Context, c client.WithWatch, obj client.Object) error {
	d, ok := obj.(*appsv1.Deployment)
	if !ok {
		return nil
	}
	for i, e := range d.Spec.Template.Spec.Containers[0].Env {
		if strings.Contains(e.Name, "=") {
			return apierrors.NewInvalid(appsv1.SchemeGroupVersion.WithKind("Deployment").GroupKind(), d.Name, field.ErrorList{
				field.Invalid(field.NewPath("spec", "template", "spec", "containers").Index(0).Child("env").Index(i).Child("name"), e.Name, "must not contain '='"),
			})
		}
	}
	return nil
}

func TestReconcileInvalidSpec(t *testing.T) {
	agent := testAgent()
	agent.Generation = 1
	agent.Spec.Env = []corev1.EnvVar{{Name: "A=B", Value: "1"}}
	agent.Spec.Share = &v1alpha1.ShareSpec{Enabled: true}
	scheme := clientscheme.Scheme
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(agent).
		WithStatusSubresource(&v1alpha1.Agent{}, &appsv1.Deployment{}).
		WithInterceptorFuncs(interceptor.Funcs{
			Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				if err := refuseBadEnv(ctx, c, obj); err != nil {
					return err
				}
				return c.Create(ctx, obj, opts...)
			},
			Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
				if err := refuseBadEnv(ctx, c, obj); err != nil {
					return err
				}
				return c.Update(ctx, obj, opts...)
			},
		}).Build()
	rec := events.NewFakeRecorder(16)
	r := NewAgentReconciler(c, c, rec, Config{Keys: sharetest.Keys()})
	key := client.ObjectKeyFromObject(agent)
	run := func() (reconcile.Result, *v1alpha1.Agent, []string) {
		t.Helper()
		res, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: key})
		if err != nil {
			t.Fatalf("Reconcile: %v (an invalid spec is reported, not retried)", err)
		}
		got := &v1alpha1.Agent{}
		if err := c.Get(context.Background(), key, got); err != nil {
			t.Fatal(err)
		}
		var evs []string
		for len(rec.Events) > 0 {
			evs = append(evs, <-rec.Events)
		}
		return res, got, evs
	}

	// A new Agent: nothing runs, and the Agent says why.
	res, got, evs := run()
	if cond := meta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionReady); cond == nil || cond.Reason != ReasonInvalidSpec ||
		!strings.Contains(cond.Message, "spec.template.spec.containers[0].env[0].name") {
		t.Errorf("Ready = %+v, want False/InvalidSpec naming the field", cond)
	}
	if got.Status.ObservedGeneration != 0 {
		t.Errorf("observedGeneration = %d: the spec was not applied", got.Status.ObservedGeneration)
	}
	if res.RequeueAfter != 0 {
		t.Errorf("RequeueAfter = %v: the same spec fails the same way", res.RequeueAfter)
	}
	if len(evs) == 0 || !strings.Contains(strings.Join(evs, "\n"), "Warning "+ReasonInvalidSpec) {
		t.Errorf("events = %v, want a Warning %s", evs, ReasonInvalidSpec)
	}
	// The share is still looked after.
	if r := conditionReason(got, v1alpha1.ConditionShareReady); r != "False/AgentNotReady" {
		t.Errorf("ShareReady = %s", r)
	}

	// Fixed, it runs; an invalid change later leaves the Deployment as it
	// was and Ready as the Deployment is.
	got.Spec.Env = []corev1.EnvVar{{Name: "A", Value: "1"}}
	got.Generation = 2
	if err := c.Update(context.Background(), got); err != nil {
		t.Fatal(err)
	}
	_, got, _ = run()
	if got.Status.ObservedGeneration != 2 {
		t.Fatalf("observedGeneration = %d after the fix", got.Status.ObservedGeneration)
	}
	d := &appsv1.Deployment{}
	if err := c.Get(context.Background(), key, d); err != nil {
		t.Fatal(err)
	}
	d.Status = appsv1.DeploymentStatus{AvailableReplicas: 1, Conditions: []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue}}}
	if err := c.Status().Update(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	_, got, _ = run()
	got.Spec.Env = []corev1.EnvVar{{Name: "A=B", Value: "1"}}
	got.Generation = 3
	if err := c.Update(context.Background(), got); err != nil {
		t.Fatal(err)
	}
	_, got, evs = run()
	if r := conditionReason(got, v1alpha1.ConditionReady); r != "True/DeploymentAvailable" {
		t.Errorf("Ready = %s, want the running Deployment's", r)
	}
	if r := conditionReason(got, v1alpha1.ConditionShareReady); r != "True/Active" {
		t.Errorf("ShareReady = %s: the running link must keep working", r)
	}
	if got.Status.ObservedGeneration != 2 {
		t.Errorf("observedGeneration = %d, want 2: generation 3 was not applied", got.Status.ObservedGeneration)
	}
	if !strings.Contains(strings.Join(evs, "\n"), "Warning "+ReasonInvalidSpec) {
		t.Errorf("events = %v, want a Warning %s", evs, ReasonInvalidSpec)
	}
	after := &appsv1.Deployment{}
	if err := c.Get(context.Background(), key, after); err != nil {
		t.Fatal(err)
	}
	if after.Spec.Template.Spec.Containers[0].Env[0].Name != "A" {
		t.Errorf("the Deployment changed: %+v", after.Spec.Template.Spec.Containers[0].Env)
	}
}

func TestReconcileAnnouncesADisableOnce(t *testing.T) {
	active := metav1.Condition{Type: v1alpha1.ConditionShareReady, Status: metav1.ConditionTrue, Reason: share.ReasonActive,
		ObservedGeneration: 1, LastTransitionTime: metav1.Now()}
	disabled := metav1.Condition{Type: v1alpha1.ConditionShareReady, Status: metav1.ConditionFalse, Reason: share.ReasonDisabled,
		ObservedGeneration: 2, LastTransitionTime: metav1.Now()}
	tests := []struct {
		name string
		// live is the ShareReady condition the API server holds; the
		// cache holds the link as Active, its Secret already deleted.
		live       metav1.Condition
		wantEvents []string
	}{
		{name: "the cache lags the status this controller wrote after deleting the Secret", live: disabled},
		{name: "a replica deleted the Secret and stopped before writing the status", live: active, wantEvents: []string{EventShareDisabled}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			scheme := clientscheme.Scheme
			agent := testAgent()
			agent.Generation = 2
			agent.Spec.Share = &v1alpha1.ShareSpec{Enabled: false}
			cached := agent.DeepCopy()
			cached.Status.Conditions = []metav1.Condition{active}
			live := agent.DeepCopy()
			live.Status.Conditions = []metav1.Condition{tc.live}
			cache := fake.NewClientBuilder().WithScheme(scheme).WithObjects(cached).WithStatusSubresource(&v1alpha1.Agent{}).Build()
			apiServer := fake.NewClientBuilder().WithScheme(scheme).WithObjects(live).Build()
			rec := events.NewFakeRecorder(16)
			r := NewAgentReconciler(cache, apiServer, rec, Config{Keys: sharetest.Keys()})
			if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(agent)}); err != nil {
				t.Fatal(err)
			}
			var got []string
			for len(rec.Events) > 0 {
				got = append(got, <-rec.Events)
			}
			if strings.Join(reasons(got), ",") != strings.Join(tc.wantEvents, ",") {
				t.Errorf("events %v, want %v", got, tc.wantEvents)
			}
		})
	}
}

// staleAgentCache is a client whose cache has not yet seen the Agent's
// latest writes: Get returns the Agent as it was when stale was set.
type staleAgentCache struct {
	client.Client
	stale *v1alpha1.Agent
}

func (c *staleAgentCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if a, ok := obj.(*v1alpha1.Agent); ok && c.stale != nil {
		c.stale.DeepCopyInto(a)
		return nil
	}
	return c.Client.Get(ctx, key, obj, opts...)
}

// TestReconcileWritesPastAStaleCache checks that a status the cache has not
// caught up with is not taken for the API server's: the Deployment goes
// unavailable and back while the cache still holds the Agent from before,
// and the Agent must end up Ready on the API server, with the transitions
// announced once each.
//
// It measures what the controller's writtenStatuses earn. Without them the
// third reconcile computes Ready from the stale cache: a write that compares
// with the cache skips the change the API server needs, and a server-side
// apply of the status computed from the stale read would send the first
// Ready's lastTransitionTime back and, sent on every reconcile, a request
// with nothing to change.
func TestReconcileWritesPastAStaleCache(t *testing.T) {
	start := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	h := newHarness(t, start, testAgent())
	statusWrites := 0
	countingClient := interceptor.NewClient(h.client.(client.WithWatch), interceptor.Funcs{
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			if _, ok := obj.(*v1alpha1.Agent); ok && sub == "status" {
				statusWrites++
			}
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	})
	cache := &staleAgentCache{Client: countingClient}
	h.r = NewAgentReconciler(cache, h.client, h.events, Config{Clock: h.clock, PublicURL: "https://share.example.com", Keys: sharetest.Keys()})
	setAvailable := func(available bool) {
		d := &appsv1.Deployment{}
		if err := h.client.Get(context.Background(), h.key, d); err != nil {
			t.Fatal(err)
		}
		d.Status.AvailableReplicas = 0
		d.Status.Conditions = []appsv1.DeploymentCondition{{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionFalse}}
		if available {
			d.Status.AvailableReplicas = 1
			d.Status.Conditions[0].Status = corev1.ConditionTrue
		}
		if err := h.client.Status().Update(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}

	h.reconcile() // creates the Deployment
	setAvailable(true)
	h.clock.SetTime(h.clock.Now().Add(time.Minute))
	_, agent, _ := h.reconcile()
	if got := conditionReason(agent, v1alpha1.ConditionReady); got != "True/DeploymentAvailable" {
		t.Fatalf("Ready is %s after the Deployment became available", got)
	}
	// From here on the cache holds the Agent as it is now, Ready.
	cache.stale = agent.DeepCopy()

	setAvailable(false)
	h.clock.SetTime(h.clock.Now().Add(time.Minute))
	_, agent, _ = h.reconcile()
	if got := conditionReason(agent, v1alpha1.ConditionReady); got != "False/DeploymentUnavailable" {
		t.Fatalf("Ready is %s on the API server after the Deployment became unavailable", got)
	}
	setAvailable(true)
	h.clock.SetTime(h.clock.Now().Add(time.Minute))
	_, agent, _ = h.reconcile()
	if got := conditionReason(agent, v1alpha1.ConditionReady); got != "True/DeploymentAvailable" {
		t.Fatalf("Ready is %s on the API server after the Deployment came back, with the cache still at the first Ready", got)
	}
	backAt := h.clock.Now()
	if c := meta.FindStatusCondition(agent.Status.Conditions, v1alpha1.ConditionReady); !c.LastTransitionTime.Time.Equal(backAt) {
		t.Errorf("Ready last changed at %s on the API server, want %s, when the Deployment came back", c.LastTransitionTime.UTC(), backAt)
	}
	// Nothing changed since: with the cache still behind, the reconcile
	// sends no status request and the status stays.
	writesBefore := statusWrites
	h.clock.SetTime(h.clock.Now().Add(time.Minute))
	_, again, _ := h.reconcile()
	if again.ResourceVersion != agent.ResourceVersion {
		t.Errorf("a reconcile with nothing to change wrote the status (resourceVersion %s → %s)", agent.ResourceVersion, again.ResourceVersion)
	}
	if n := statusWrites - writesBefore; n != 0 {
		t.Errorf("a reconcile with nothing to change sent %d status requests, want none", n)
	}
}
