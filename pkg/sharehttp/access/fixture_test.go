package access

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache/informertest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/sharetest"
)

// fakeCache is a cache whose reads are served by a fake client holding the
// objects, indexed as the real cache is.
type fakeCache struct {
	*informertest.FakeInformers
	reader client.Reader
}

func (c *fakeCache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	return c.reader.Get(ctx, key, obj, opts...)
}

func (c *fakeCache) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	return c.reader.List(ctx, list, opts...)
}

// resolverFixture is a Resolver over a fake cluster with one working link:
// a Ready Agent with its share enabled and its share Secret.
type resolverFixture struct {
	resolver *Resolver
	client   client.Client
	agent    *v1alpha1.Agent
	token    string
}

func newResolverFixture(t *testing.T) *resolverFixture {
	t.Helper()
	agent := &v1alpha1.Agent{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "agent", UID: "agent-uid"},
		Spec:       v1alpha1.AgentSpec{Image: "busybox", Share: &v1alpha1.ShareSpec{Enabled: true}},
		Status: v1alpha1.AgentStatus{Conditions: []metav1.Condition{
			{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "DeploymentAvailable", LastTransitionTime: metav1.Now()},
		}},
	}
	token, err := share.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(NewScheme()).
		WithObjects(agent, sharetest.Secret(agent, "", token)).
		WithIndex(&corev1.Secret{}, TokenHashIndex, func(obj client.Object) []string {
			return []string{share.TokenHash(string(obj.(*corev1.Secret).Data[share.SecretTokenKey]))}
		}).Build()
	r := NewResolverFor(&fakeCache{FakeInformers: &informertest.FakeInformers{}, reader: c}, c, sharetest.Keys(), clock.RealClock{}, nil)
	return &resolverFixture{resolver: r, client: c, agent: agent, token: token}
}
