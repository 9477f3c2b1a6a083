package access

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/sharetest"
	"github.com/kubeopencode/share/pkg/sharehttp/access/accesstest"
)

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
	agent := accesstest.ReadyAgent()
	token, err := share.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(NewScheme()).
		WithObjects(agent, sharetest.Secret(agent, "", token)).
		WithIndex(&corev1.Secret{}, TokenHashIndex, func(obj client.Object) []string {
			return []string{share.TokenHash(string(obj.(*corev1.Secret).Data[share.SecretTokenKey]))}
		}).Build()
	r := NewResolverFor(accesstest.NewCache(c, NewScheme()), c, sharetest.Keys(), clock.RealClock{}, nil)
	return &resolverFixture{resolver: r, client: c, agent: agent, token: token}
}
