package controller

import (
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	crevent "sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/sharetest"
)

// requestLog records the requests a reconcile makes, as "verb kind".
type requestLog []string

func (l *requestLog) funcs() interceptor.Funcs {
	kind := func(obj client.Object) string {
		switch obj.(type) {
		case *v1alpha1.Agent:
			return "Agent"
		case *appsv1.Deployment:
			return "Deployment"
		case *corev1.Secret:
			return "Secret"
		}
		return "other"
	}
	return interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			*l = append(*l, "get "+kind(obj))
			return c.Get(ctx, key, obj, opts...)
		},
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			*l = append(*l, "create "+kind(obj))
			return c.Create(ctx, obj, opts...)
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			*l = append(*l, "update "+kind(obj))
			return c.Update(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			*l = append(*l, "patch "+kind(obj))
			return c.Patch(ctx, obj, patch, opts...)
		},
		SubResourcePatch: func(ctx context.Context, c client.Client, sub string, obj client.Object, patch client.Patch, opts ...client.SubResourcePatchOption) error {
			*l = append(*l, "patch "+kind(obj)+"/"+sub)
			return c.SubResource(sub).Patch(ctx, obj, patch, opts...)
		},
	}
}

// A new Agent costs the API server a Deployment, a read of the Agent (the
// token is stored only for the Agent the API server has), a Secret and a
// status write: the Secret is created with its fingerprint, so it is not
// written twice, and it is not read first.
func TestReconcileNewAgentRequests(t *testing.T) {
	agent := testAgent()
	agent.Generation = 1
	agent.Spec.Share = &v1alpha1.ShareSpec{Enabled: true}
	scheme := clientscheme.Scheme
	store := fake.NewClientBuilder().WithScheme(scheme).WithObjects(agent).
		WithStatusSubresource(&v1alpha1.Agent{}, &appsv1.Deployment{}).Build()
	// The cache's reads are free; only the live reads and the writes reach
	// the API server.
	var live requestLog
	apiReader := interceptor.NewClient(store, live.funcs())
	var writes requestLog
	funcs := writes.funcs()
	funcs.Get = nil
	cached := interceptor.NewClient(store, funcs)
	rec := events.NewFakeRecorder(16)
	r := NewAgentReconciler(cached, apiReader, rec, Config{Keys: sharetest.Keys()})
	if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(agent)}); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(append(live, writes...), ", ")
	if want := "get Agent, create Deployment, create Secret, patch Agent/status"; got != want {
		t.Errorf("requests: %s, want %s", got, want)
	}
	secret := &corev1.Secret{}
	if err := store.Get(context.Background(), client.ObjectKey{Namespace: agent.Namespace, Name: share.SecretName(agent.Name)}, secret); err != nil {
		t.Fatal(err)
	}
	token, _, err := share.VerifySecret(sharetest.Ring(), secret, agent)
	if err != nil {
		t.Fatal(err)
	}
	if fp := secret.Annotations[AnnotationTokenFingerprint]; fp != fingerprint(token) {
		t.Errorf("fingerprint %q, want that of the token", fp)
	}
	if len(rec.Events) != 1 || !strings.Contains(<-rec.Events, EventShareEnabled) {
		t.Errorf("want one %s Event", EventShareEnabled)
	}

	// Again, as when a watch event brings the Agent back: nothing to write.
	live, writes = nil, nil
	if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(agent)}); err != nil {
		t.Fatal(err)
	}
	if len(live)+len(writes) != 0 || len(rec.Events) != 0 {
		t.Errorf("second reconcile: requests %v %v and %d Events, want none", live, writes, len(rec.Events))
	}
}

// A Secret on the API server that the cache does not show yet keeps its
// token: the create fails, and the Secret on the API server is used and
// announced.
func TestReconcileSecretNotInCacheYet(t *testing.T) {
	agent := testAgent()
	agent.Generation = 1
	agent.Spec.Share = &v1alpha1.ShareSpec{Enabled: true}
	token, err := share.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	existing := sharetest.Secret(agent, "", token)
	scheme := clientscheme.Scheme
	store := fake.NewClientBuilder().WithScheme(scheme).WithObjects(agent, existing).
		WithStatusSubresource(&v1alpha1.Agent{}, &appsv1.Deployment{}).Build()
	// The cache lags: it has not seen the Secret yet.
	cached := interceptor.NewClient(store, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if _, ok := obj.(*corev1.Secret); ok {
				return apierrors.NewNotFound(corev1.Resource("secrets"), key.Name)
			}
			return c.Get(ctx, key, obj, opts...)
		},
	})
	rec := events.NewFakeRecorder(16)
	r := NewAgentReconciler(cached, store, rec, Config{Keys: sharetest.Keys()})
	if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(agent)}); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{}
	if err := store.Get(context.Background(), client.ObjectKeyFromObject(existing), secret); err != nil {
		t.Fatal(err)
	}
	if got := string(secret.Data[share.SecretTokenKey]); got != token {
		t.Error("the token on the API server was replaced")
	}
	if fp := secret.Annotations[AnnotationTokenFingerprint]; fp != fingerprint(token) {
		t.Errorf("fingerprint %q, want that of the existing token", fp)
	}
	if len(rec.Events) != 1 || !strings.Contains(<-rec.Events, EventShareEnabled) {
		t.Errorf("want one %s Event", EventShareEnabled)
	}
}

func TestWatchPredicates(t *testing.T) {
	agent := testAgent()
	made := sharetest.Secret(agent, "", "t")
	made.Annotations[AnnotationTokenFingerprint] = "0123456789abcdef"
	enabled := sharetest.Secret(agent, "", "t")
	for _, tc := range []struct {
		name string
		got  bool
		want bool
	}{
		{"a Secret the controller created", notCreatedByController.Create(crevent.CreateEvent{Object: made}), false},
		{"a Secret the aggregated API created", notCreatedByController.Create(crevent.CreateEvent{Object: enabled}), true},
		{"a Secret updated", notCreatedByController.Update(crevent.UpdateEvent{ObjectOld: made, ObjectNew: made}), true},
		{"a Secret deleted", notCreatedByController.Delete(crevent.DeleteEvent{Object: made}), true},
		{"a Deployment created", notCreated.Create(crevent.CreateEvent{Object: &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "d"}}}), false},
		{"a Deployment updated", notCreated.Update(crevent.UpdateEvent{ObjectOld: &appsv1.Deployment{}, ObjectNew: &appsv1.Deployment{}}), true},
		{"a Deployment deleted", notCreated.Delete(crevent.DeleteEvent{Object: &appsv1.Deployment{}}), true},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: let through %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}
