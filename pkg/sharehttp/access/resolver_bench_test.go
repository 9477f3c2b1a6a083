package access

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache/informertest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/sharetest"
)

// indexedCache is a cache for benchmarks: share Secrets in a client-go
// indexer with the token-hash index, as the informer cache keeps them, and
// Agents in a map. List answers only the token-hash lookup Resolve makes.
type indexedCache struct {
	informertest.FakeInformers
	secrets toolscache.Indexer
	agents  map[types.NamespacedName]*v1alpha1.Agent
}

func newIndexedCache() *indexedCache {
	return &indexedCache{
		secrets: toolscache.NewIndexer(toolscache.MetaNamespaceKeyFunc, toolscache.Indexers{
			TokenHashIndex: func(obj any) ([]string, error) {
				return []string{share.TokenHash(string(obj.(*corev1.Secret).Data[share.SecretTokenKey]))}, nil
			},
		}),
		agents: map[types.NamespacedName]*v1alpha1.Agent{},
	}
}

func (c *indexedCache) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	a, ok := obj.(*v1alpha1.Agent)
	if !ok {
		return fmt.Errorf("indexedCache holds no %T", obj)
	}
	src := c.agents[key]
	if src == nil {
		return apierrors.NewNotFound(v1alpha1.SchemeGroupVersion.WithResource("agents").GroupResource(), key.Name)
	}
	*a = *src
	return nil
}

func (c *indexedCache) List(_ context.Context, list client.ObjectList, opts ...client.ListOption) error {
	lo := (&client.ListOptions{}).ApplyOptions(opts)
	hash, ok := lo.FieldSelector.RequiresExactMatch(TokenHashIndex)
	if !ok {
		return fmt.Errorf("indexedCache lists only by %s", TokenHashIndex)
	}
	objs, err := c.secrets.ByIndex(TokenHashIndex, hash)
	if err != nil {
		return err
	}
	sl := list.(*corev1.SecretList)
	sl.Items = make([]corev1.Secret, 0, len(objs))
	for _, o := range objs {
		sl.Items = append(sl.Items, *o.(*corev1.Secret))
	}
	return nil
}

// addLink adds a ready Agent with sharing enabled and its share Secret, and
// returns the token.
func (c *indexedCache) addLink(b *testing.B, ns, name string) string {
	token, err := share.NewToken()
	if err != nil {
		b.Fatal(err)
	}
	agent := &v1alpha1.Agent{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name)},
		Spec:       v1alpha1.AgentSpec{Share: &v1alpha1.ShareSpec{Enabled: true}},
		Status: v1alpha1.AgentStatus{Conditions: []metav1.Condition{
			{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "Available"},
		}},
	}
	c.agents[types.NamespacedName{Namespace: ns, Name: name}] = agent
	if err := c.secrets.Add(sharetest.Secret(agent, "", token)); err != nil {
		b.Fatal(err)
	}
	return token
}

// BenchmarkResolve resolves a valid and an unknown token with N share links
// in the cache: the time should not grow with N.
func BenchmarkResolve(b *testing.B) {
	client := netip.MustParseAddr("192.0.2.10")
	for _, n := range []int{10, 1000, 10000, 100000} {
		c := newIndexedCache()
		var valid string
		for i := range n {
			valid = c.addLink(b, fmt.Sprintf("ns-%d", i%100), fmt.Sprintf("agent-%d", i))
		}
		links := NewResolverFor(c, nil, sharetest.Keys(), clock.RealClock{}, nil)
		unknown, _ := share.NewToken()
		b.Run(fmt.Sprintf("links=%d/valid", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, refusal := links.Resolve(b.Context(), valid, client); refusal != nil {
					b.Fatal(refusal)
				}
			}
		})
		b.Run(fmt.Sprintf("links=%d/unknown", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, refusal := links.Resolve(b.Context(), unknown, client); refusal == nil || refusal.Reason != ReasonNotFound {
					b.Fatalf("unknown token: %v", refusal)
				}
			}
		})
	}
}
