package agentshare

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/user"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/sharetest"
)

const (
	testNamespace = "default"
	testName      = "team-agent"
	testUID       = types.UID("agent-uid")
)

var testNow = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func testAgent(s *kubeopencodev1alpha1.ShareSpec) *kubeopencodev1alpha1.Agent {
	return &kubeopencodev1alpha1.Agent{
		TypeMeta:   metav1.TypeMeta{APIVersion: kubeopencodev1alpha1.SchemeGroupVersion.String(), Kind: "Agent"},
		ObjectMeta: metav1.ObjectMeta{Namespace: testNamespace, Name: testName, UID: testUID},
		Spec:       kubeopencodev1alpha1.AgentSpec{Image: "busybox", Share: s},
	}
}

func testCtx() context.Context {
	ctx := genericapirequest.WithNamespace(context.Background(), testNamespace)
	return genericapirequest.WithUser(ctx, &user.DefaultInfo{Name: "alice"})
}

func at(d time.Duration) *metav1.Time {
	t := metav1.NewTime(testNow.Add(d))
	return &t
}

func in(d time.Duration) *metav1.Duration {
	return &metav1.Duration{Duration: d}
}

type fixture struct {
	client client.WithWatch
	rest   *REST
}

func newFixture(t *testing.T, funcs *interceptor.Funcs, objs ...client.Object) *fixture {
	t.Helper()
	b := fake.NewClientBuilder().WithScheme(clientscheme.Scheme).WithObjects(objs...)
	if funcs != nil {
		b = b.WithInterceptorFuncs(*funcs)
	}
	c := b.Build()
	return &fixture{
		client: c,
		rest: NewREST(Config{
			Client:      c,
			PublicURL:   "https://share.example.com",
			MaxDuration: 0,
			Clock:       clocktesting.NewFakePassiveClock(testNow),
			Keys:        sharetest.Keys(),
		}),
	}
}

func (f *fixture) create(t *testing.T, spec subresourcesv1alpha1.AgentShareSpec) (*subresourcesv1alpha1.AgentShare, error) {
	t.Helper()
	obj, err := f.rest.Create(testCtx(), testName, &subresourcesv1alpha1.AgentShare{Spec: spec}, nil, &metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	return obj.(*subresourcesv1alpha1.AgentShare), nil
}

func (f *fixture) agent(t *testing.T) *kubeopencodev1alpha1.Agent {
	t.Helper()
	a := &kubeopencodev1alpha1.Agent{}
	if err := f.client.Get(context.Background(), types.NamespacedName{Namespace: testNamespace, Name: testName}, a); err != nil {
		t.Fatal(err)
	}
	return a
}

// secretToken returns the token in the share Secret, or "" when there is none.
func (f *fixture) secretToken(t *testing.T) string {
	t.Helper()
	s := &corev1.Secret{}
	err := f.client.Get(context.Background(), types.NamespacedName{Namespace: testNamespace, Name: share.SecretName(testName)}, s)
	if apierrors.IsNotFound(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(s.Data[share.SecretTokenKey])
}

func TestCreateEnables(t *testing.T) {
	f := newFixture(t, nil, testAgent(nil))
	got, err := f.create(t, subresourcesv1alpha1.AgentShareSpec{ExpiresIn: in(24 * time.Hour), AllowedIPs: []string{"10.0.0.0/8", "192.168.1.7"}})
	if err != nil {
		t.Fatal(err)
	}
	token := f.secretToken(t)
	if !share.ValidToken(token) {
		t.Fatalf("share Secret token %q is not a token", token)
	}
	want := &subresourcesv1alpha1.AgentShare{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNamespace, Name: testName},
		Spec:       subresourcesv1alpha1.AgentShareSpec{ExpiresAt: at(24 * time.Hour), AllowedIPs: []string{"10.0.0.0/8", "192.168.1.7"}, Mode: "edit"},
		Status: subresourcesv1alpha1.AgentShareStatus{
			// The Agent has no Ready condition: the link works once it has.
			Active:     false,
			Reason:     share.ReasonAgentNotReady,
			Token:      token,
			Path:       "/s/" + token,
			URL:        "https://share.example.com/s/" + token,
			ExpiresAt:  at(24 * time.Hour),
			AllowedIPs: []string{"10.0.0.0/8", "192.168.1.7"},
			Mode:       "edit",
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Create() (-want +got):\n%s", diff)
	}
	wantSpec := &kubeopencodev1alpha1.ShareSpec{Enabled: true, ShareLinkSpec: kubeopencodev1alpha1.ShareLinkSpec{ExpiresAt: at(24 * time.Hour), AllowedIPs: []kubeopencodev1alpha1.IPOrCIDR{"10.0.0.0/8", "192.168.1.7"}}}
	if diff := cmp.Diff(wantSpec, f.agent(t).Spec.Share); diff != "" {
		t.Errorf("Agent spec.share (-want +got):\n%s", diff)
	}
}

func TestCreateIsIdempotentUnlessRotating(t *testing.T) {
	f := newFixture(t, nil, testAgent(nil))
	first, err := f.create(t, subresourcesv1alpha1.AgentShareSpec{})
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.create(t, subresourcesv1alpha1.AgentShareSpec{AllowedIPs: []string{"10.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if again.Status.Token != first.Status.Token {
		t.Errorf("enabling an enabled link changed its token")
	}
	if diff := cmp.Diff([]string{"10.0.0.1"}, again.Status.AllowedIPs); diff != "" {
		t.Errorf("allowed IPs were not updated (-want +got):\n%s", diff)
	}
	rotated, err := f.create(t, subresourcesv1alpha1.AgentShareSpec{Rotate: true})
	if err != nil {
		t.Fatal(err)
	}
	if rotated.Status.Token == first.Status.Token || rotated.Status.Token != f.secretToken(t) {
		t.Errorf("rotate: token %q, first %q, Secret %q", rotated.Status.Token, first.Status.Token, f.secretToken(t))
	}
}

func TestCreateReplacesLeftoverSecret(t *testing.T) {
	// Sharing was disabled in the Agent while its Secret is still there, for
	// instance before the controller deleted it: enabling must not bring the
	// old token back.
	agent := testAgent(&kubeopencodev1alpha1.ShareSpec{})
	old := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE"
	f := newFixture(t, nil, agent, sharetest.Secret(agent, "", old))
	got, err := f.create(t, subresourcesv1alpha1.AgentShareSpec{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Token == old || !share.ValidToken(got.Status.Token) || got.Status.Token != f.secretToken(t) {
		t.Errorf("token %q, Secret %q; want a new token", got.Status.Token, f.secretToken(t))
	}
}

func TestCreateExpiry(t *testing.T) {
	tests := []struct {
		name string
		spec subresourcesv1alpha1.AgentShareSpec
		max  time.Duration
		want *metav1.Time
	}{
		{name: "no expiry", want: nil},
		{name: "no expiry under a cap", max: 48 * time.Hour, want: at(48 * time.Hour)},
		{name: "expires in", spec: subresourcesv1alpha1.AgentShareSpec{ExpiresIn: in(90 * time.Minute)}, want: at(90 * time.Minute)},
		{name: "expires in, sub-second", spec: subresourcesv1alpha1.AgentShareSpec{ExpiresIn: in(1500 * time.Millisecond)}, want: at(time.Second)},
		{name: "expires at", spec: subresourcesv1alpha1.AgentShareSpec{ExpiresAt: at(time.Hour)}, max: 48 * time.Hour, want: at(time.Hour)},
		{name: "expires at, sub-second", spec: subresourcesv1alpha1.AgentShareSpec{ExpiresAt: at(time.Hour + 300*time.Millisecond)}, want: at(time.Hour)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil, testAgent(nil))
			f.rest.maxDuration = tc.max
			got, err := f.create(t, tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got.Status.ExpiresAt); diff != "" {
				t.Errorf("status.expiresAt (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.want, f.agent(t).Spec.Share.ExpiresAt); diff != "" {
				t.Errorf("Agent spec.share.expiresAt (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCreateInvalid(t *testing.T) {
	tests := []struct {
		name   string
		share  *subresourcesv1alpha1.AgentShare
		max    time.Duration
		fields []string
	}{
		{name: "both expiries", share: &subresourcesv1alpha1.AgentShare{Spec: subresourcesv1alpha1.AgentShareSpec{ExpiresAt: at(time.Hour), ExpiresIn: in(time.Hour)}}, fields: []string{"spec.expiresIn"}},
		{name: "past", share: &subresourcesv1alpha1.AgentShare{Spec: subresourcesv1alpha1.AgentShareSpec{ExpiresAt: at(-time.Hour)}}, fields: []string{"spec.expiresAt"}},
		{name: "less than a second ahead", share: &subresourcesv1alpha1.AgentShare{Spec: subresourcesv1alpha1.AgentShareSpec{ExpiresAt: at(500 * time.Millisecond)}}, fields: []string{"spec.expiresAt"}},
		{name: "negative duration", share: &subresourcesv1alpha1.AgentShare{Spec: subresourcesv1alpha1.AgentShareSpec{ExpiresIn: in(-time.Hour)}}, fields: []string{"spec.expiresIn"}},
		{name: "over the cap", share: &subresourcesv1alpha1.AgentShare{Spec: subresourcesv1alpha1.AgentShareSpec{ExpiresIn: in(49 * time.Hour)}}, max: 48 * time.Hour, fields: []string{"spec.expiresIn"}},
		{name: "bad CIDR", share: &subresourcesv1alpha1.AgentShare{Spec: subresourcesv1alpha1.AgentShareSpec{AllowedIPs: []string{"10.0.0.0/8", "10.0.0.0/33"}}}, fields: []string{"spec.allowedIPs[1]"}},
		{name: "another name", share: &subresourcesv1alpha1.AgentShare{ObjectMeta: metav1.ObjectMeta{Name: "other"}}, fields: []string{"metadata.name"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, nil, testAgent(nil))
			f.rest.maxDuration = tc.max
			_, err := f.rest.Create(testCtx(), testName, tc.share, nil, &metav1.CreateOptions{})
			if !apierrors.IsInvalid(err) {
				t.Fatalf("err = %v, want Invalid", err)
			}
			var got []string
			for _, c := range err.(apierrors.APIStatus).Status().Details.Causes {
				got = append(got, c.Field)
			}
			if diff := cmp.Diff(tc.fields, got); diff != "" {
				t.Errorf("fields (-want +got):\n%s", diff)
			}
			if f.agent(t).Spec.Share != nil || f.secretToken(t) != "" {
				t.Errorf("an invalid request changed the Agent or made a Secret")
			}
		})
	}
}

func TestCreateRunsAdmission(t *testing.T) {
	f := newFixture(t, nil, testAgent(nil))
	deny := func(context.Context, runtime.Object) error {
		return apierrors.NewForbidden(subresourcesv1alpha1.Resource("agents/share"), testName, errors.New("denied"))
	}
	_, err := f.rest.Create(testCtx(), testName, &subresourcesv1alpha1.AgentShare{}, deny, &metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) {
		t.Fatalf("err = %v, want the admission error", err)
	}
	if f.agent(t).Spec.Share != nil {
		t.Errorf("a denied request changed the Agent")
	}
}

func TestUnknownAgent(t *testing.T) {
	f := newFixture(t, nil)
	_, createErr := f.create(t, subresourcesv1alpha1.AgentShareSpec{})
	_, getErr := f.rest.Get(testCtx(), testName, &subresourcesv1alpha1.AgentShareOptions{})
	_, _, deleteErr := f.rest.Delete(testCtx(), testName, nil, &metav1.DeleteOptions{})
	for verb, err := range map[string]error{"create": createErr, "get": getErr, "delete": deleteErr} {
		if !apierrors.IsNotFound(err) {
			t.Errorf("%s: err = %v, want NotFound", verb, err)
			continue
		}
		d := err.(apierrors.APIStatus).Status().Details
		if d.Group != kubeopencodev1alpha1.GroupName || d.Kind != "agents" || d.Name != testName {
			t.Errorf("%s: details = %+v, want agents.kubeopencode.io %q", verb, d, testName)
		}
	}
}

func TestCreateForeignSecretConflicts(t *testing.T) {
	agent := testAgent(nil)
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testNamespace, Name: share.SecretName(testName)}}
	f := newFixture(t, nil, agent, foreign)
	_, err := f.create(t, subresourcesv1alpha1.AgentShareSpec{})
	if !apierrors.IsConflict(err) {
		t.Fatalf("err = %v, want Conflict", err)
	}
}

func TestCreateOnAgentBeingDeletedConflicts(t *testing.T) {
	agent := testAgent(nil)
	agent.Finalizers = []string{"example.com/hold"}
	agent.DeletionTimestamp = at(-time.Second)
	f := newFixture(t, nil, agent)
	_, err := f.create(t, subresourcesv1alpha1.AgentShareSpec{})
	if !apierrors.IsConflict(err) {
		t.Fatalf("err = %v, want Conflict", err)
	}
	if f.secretToken(t) != "" {
		t.Error("a share Secret was made for an Agent being deleted")
	}
	if a := f.agent(t); a.Spec.Share != nil {
		t.Errorf("spec.share = %+v, want it untouched", a.Spec.Share)
	}
}

func TestCreateDryRun(t *testing.T) {
	f := newFixture(t, nil, testAgent(nil))
	obj, err := f.rest.Create(testCtx(), testName, &subresourcesv1alpha1.AgentShare{Spec: subresourcesv1alpha1.AgentShareSpec{ExpiresIn: in(time.Hour)}}, nil,
		&metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		t.Fatal(err)
	}
	got := obj.(*subresourcesv1alpha1.AgentShare)
	if got.Status.Token != "" || got.Status.ExpiresAt == nil {
		t.Errorf("dry run answered %+v", got.Status)
	}
	if f.agent(t).Spec.Share != nil || f.secretToken(t) != "" {
		t.Errorf("a dry run changed the Agent or made a Secret")
	}
}

func TestCreateRetriesConflicts(t *testing.T) {
	conflicts, patches := 2, 0
	funcs := &interceptor.Funcs{
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			patches++
			if conflicts > 0 {
				conflicts--
				// Another writer changes the Agent first.
				a := &kubeopencodev1alpha1.Agent{}
				if err := c.Get(ctx, client.ObjectKeyFromObject(obj), a); err != nil {
					return err
				}
				a.Labels = map[string]string{"touched": "yes"}
				if err := c.Update(ctx, a); err != nil {
					return err
				}
			}
			return c.Patch(ctx, obj, patch, opts...)
		},
	}
	f := newFixture(t, funcs, testAgent(nil))
	got, err := f.create(t, subresourcesv1alpha1.AgentShareSpec{})
	if err != nil {
		t.Fatal(err)
	}
	a := f.agent(t)
	if !shareEnabled(a) || a.Labels["touched"] != "yes" || got.Status.Token == "" {
		t.Errorf("after retries: agent %+v, status %+v", a, got.Status)
	}
	if patches != 3 {
		t.Errorf("%d patches, want 3: two guarded by a stale resourceVersion, one that lands", patches)
	}
}

func TestCreateConflictThatDoesNotSettle(t *testing.T) {
	funcs := &interceptor.Funcs{
		Patch: func(context.Context, client.WithWatch, client.Object, client.Patch, ...client.PatchOption) error {
			return apierrors.NewConflict(kubeopencodev1alpha1.Resource("agents"), testName, errors.New("the object has been modified"))
		},
	}
	f := newFixture(t, funcs, testAgent(nil))
	if _, err := f.create(t, subresourcesv1alpha1.AgentShareSpec{}); !apierrors.IsConflict(err) {
		t.Fatalf("err = %v, want Conflict", err)
	}
}

func TestServerRefusedIsInternal(t *testing.T) {
	funcs := &interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*corev1.Secret); ok {
				return apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, key.Name, errors.New("no RBAC"))
			}
			return c.Get(ctx, key, obj, opts...)
		},
	}
	f := newFixture(t, funcs, testAgent(nil))
	_, err := f.create(t, subresourcesv1alpha1.AgentShareSpec{})
	if !apierrors.IsInternalError(err) {
		t.Fatalf("err = %v, want InternalError: the server's own identity is misconfigured, not the user's", err)
	}
}

func TestConcurrentRotationsHandOutOneToken(t *testing.T) {
	agent := testAgent(&kubeopencodev1alpha1.ShareSpec{Enabled: true})
	old := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE"
	winner := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAI"
	raced := false
	funcs := &interceptor.Funcs{
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if s, ok := obj.(*corev1.Secret); ok && !raced {
				raced = true
				// Another rotation writes its token between our read and
				// our write.
				other := &corev1.Secret{}
				if err := c.Get(ctx, client.ObjectKeyFromObject(s), other); err != nil {
					return err
				}
				other.Data[share.SecretTokenKey] = []byte(winner)
				other.Annotations[share.AnnotationTokenProof] = sharetest.Secret(agent, "", winner).Annotations[share.AnnotationTokenProof]
				if err := c.Update(ctx, other); err != nil {
					return err
				}
			}
			return c.Update(ctx, obj, opts...)
		},
	}
	f := newFixture(t, funcs, agent, sharetest.Secret(agent, "", old))
	got, err := f.create(t, subresourcesv1alpha1.AgentShareSpec{Rotate: true})
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Token != winner || f.secretToken(t) != winner {
		t.Errorf("token %q, Secret %q; want the concurrent rotation's %q", got.Status.Token, f.secretToken(t), winner)
	}
}

func TestCreateLosesToConcurrentDisable(t *testing.T) {
	funcs := &interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if err := c.Create(ctx, obj, opts...); err != nil {
				return err
			}
			// A disable lands right after the Secret is made.
			a := &kubeopencodev1alpha1.Agent{}
			if err := c.Get(ctx, types.NamespacedName{Namespace: testNamespace, Name: testName}, a); err != nil {
				return err
			}
			a.Spec.Share = &kubeopencodev1alpha1.ShareSpec{}
			return c.Update(ctx, a)
		},
	}
	f := newFixture(t, funcs, testAgent(nil))
	if _, err := f.create(t, subresourcesv1alpha1.AgentShareSpec{}); !apierrors.IsConflict(err) {
		t.Fatalf("err = %v, want Conflict", err)
	}
	if tok := f.secretToken(t); tok != "" {
		t.Errorf("the Secret of a disabled link was left behind")
	}
}

func TestGet(t *testing.T) {
	token := "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE"
	ready := []metav1.Condition{{Type: kubeopencodev1alpha1.ConditionReady, Status: metav1.ConditionTrue}}
	tests := []struct {
		name       string
		share      *kubeopencodev1alpha1.ShareSpec
		conditions []metav1.Condition
		secret     bool
		want       subresourcesv1alpha1.AgentShareStatus
	}{
		{name: "never shared", want: subresourcesv1alpha1.AgentShareStatus{Reason: share.ReasonDisabled}},
		{name: "disabled with a leftover Secret", share: &kubeopencodev1alpha1.ShareSpec{}, secret: true, want: subresourcesv1alpha1.AgentShareStatus{Reason: share.ReasonDisabled}},
		{
			name: "active", share: &kubeopencodev1alpha1.ShareSpec{Enabled: true, ShareLinkSpec: kubeopencodev1alpha1.ShareLinkSpec{AllowedIPs: []kubeopencodev1alpha1.IPOrCIDR{"10.0.0.0/8"}}}, conditions: ready, secret: true,
			want: subresourcesv1alpha1.AgentShareStatus{Active: true, Reason: share.ReasonActive, Token: token, Path: "/s/" + token, URL: "https://share.example.com/s/" + token, AllowedIPs: []string{"10.0.0.0/8"}, Mode: "edit"},
		},
		{
			name: "agent not ready", share: &kubeopencodev1alpha1.ShareSpec{Enabled: true}, secret: true,
			want: subresourcesv1alpha1.AgentShareStatus{Reason: share.ReasonAgentNotReady, Token: token, Path: "/s/" + token, URL: "https://share.example.com/s/" + token, Mode: "edit"},
		},
		{
			name: "enabled before its Secret exists", share: &kubeopencodev1alpha1.ShareSpec{Enabled: true}, conditions: ready,
			want: subresourcesv1alpha1.AgentShareStatus{Active: true, Reason: share.ReasonActive, Mode: "edit"},
		},
		{
			name: "expired", share: &kubeopencodev1alpha1.ShareSpec{Enabled: true, ShareLinkSpec: kubeopencodev1alpha1.ShareLinkSpec{ExpiresAt: at(-time.Minute)}}, conditions: ready, secret: true,
			want: subresourcesv1alpha1.AgentShareStatus{Reason: share.ReasonExpired, ExpiresAt: at(-time.Minute), Mode: "edit"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			agent := testAgent(tc.share)
			agent.Status.Conditions = tc.conditions
			objs := []client.Object{agent}
			if tc.secret {
				objs = append(objs, sharetest.Secret(agent, "", token))
			}
			f := newFixture(t, nil, objs...)
			obj, err := f.rest.Get(testCtx(), testName, &subresourcesv1alpha1.AgentShareOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, obj.(*subresourcesv1alpha1.AgentShare).Status); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDelete(t *testing.T) {
	f := newFixture(t, nil, testAgent(nil))
	if _, err := f.create(t, subresourcesv1alpha1.AgentShareSpec{ExpiresIn: in(time.Hour), AllowedIPs: []string{"10.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // the second disable finds nothing to do and succeeds
		obj, deleted, err := f.rest.Delete(testCtx(), testName, nil, &metav1.DeleteOptions{})
		if err != nil || !deleted {
			t.Fatalf("Delete #%d: deleted %v, err %v", i+1, deleted, err)
		}
		got := obj.(*subresourcesv1alpha1.AgentShare)
		want := subresourcesv1alpha1.AgentShareStatus{Reason: share.ReasonDisabled}
		if diff := cmp.Diff(want, got.Status); diff != "" {
			t.Errorf("Delete #%d status (-want +got):\n%s", i+1, diff)
		}
		if diff := cmp.Diff(&kubeopencodev1alpha1.ShareSpec{}, f.agent(t).Spec.Share); diff != "" {
			t.Errorf("Delete #%d: spec.share (-want +got):\n%s", i+1, diff)
		}
		if f.secretToken(t) != "" {
			t.Errorf("Delete #%d left the Secret", i+1)
		}
	}
}

func TestDeleteDryRunAndAdmission(t *testing.T) {
	f := newFixture(t, nil, testAgent(nil))
	created, err := f.create(t, subresourcesv1alpha1.AgentShareSpec{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.rest.Delete(testCtx(), testName, nil, &metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatal(err)
	}
	deny := func(context.Context, runtime.Object) error {
		return apierrors.NewForbidden(subresourcesv1alpha1.Resource("agents/share"), testName, errors.New("denied"))
	}
	if _, _, err := f.rest.Delete(testCtx(), testName, deny, &metav1.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("err = %v, want the admission error", err)
	}
	if !shareEnabled(f.agent(t)) || f.secretToken(t) != created.Status.Token {
		t.Errorf("a dry run or denied disable changed the link")
	}
}

// shareEnabled reports whether the Agent's default link is enabled.
func shareEnabled(agent *kubeopencodev1alpha1.Agent) bool {
	l, _ := share.FindLink(agent, "")
	return l.Enabled
}
