// Package accesstest holds helpers for tests of the parts that let pages
// in: a cache served by a fake client, and the Agent of a working link.
package accesstest

import (
	"context"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache/informertest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
)

// Cache is a cache whose reads are served by a client, such as a fake one
// holding the objects and indexed as the real cache is. Its informers are
// fakes that never fire.
type Cache struct {
	*informertest.FakeInformers
	reader client.Reader
}

// NewCache returns a Cache reading reader; scheme tells its informers the
// kinds.
func NewCache(reader client.Reader, scheme *runtime.Scheme) *Cache {
	return &Cache{FakeInformers: &informertest.FakeInformers{Scheme: scheme}, reader: reader}
}

// Get reads the object from the client.
func (c *Cache) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	return c.reader.Get(ctx, key, obj, opts...)
}

// List reads the objects from the client.
func (c *Cache) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	return c.reader.List(ctx, list, opts...)
}

// ReadyAgent returns the Agent team/agent, Ready, with its default link
// enabled.
func ReadyAgent() *v1alpha1.Agent {
	return &v1alpha1.Agent{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "agent", UID: "agent-uid"},
		Spec:       v1alpha1.AgentSpec{Image: "busybox", Share: &v1alpha1.ShareSpec{Enabled: true}},
		Status: v1alpha1.AgentStatus{Conditions: []metav1.Condition{
			{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: "DeploymentAvailable", LastTransitionTime: metav1.Now()},
		}},
	}
}
