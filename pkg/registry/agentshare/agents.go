package agentshare

import (
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/registry/rest"

	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
)

// AgentREST is the parent of agents/share. It serves no verbs: Agents are read
// and written in their own group, kubeopencode.io. k8s.io/apiserver refuses a
// subresource whose parent has no storage, and takes the scope of the
// subresource from the parent.
type AgentREST struct{}

var (
	_ rest.Storage              = &AgentREST{}
	_ rest.Scoper               = &AgentREST{}
	_ rest.SingularNameProvider = &AgentREST{}
)

// NewAgentREST returns the storage of the agents parent resource.
func NewAgentREST() *AgentREST {
	return &AgentREST{}
}

// New returns an empty AgentShare, the only kind of the group. The parent is
// never read or written, so its kind only names it in discovery.
func (*AgentREST) New() runtime.Object {
	return &subresourcesv1alpha1.AgentShare{}
}

// Destroy releases nothing: the storage holds no resources.
func (*AgentREST) Destroy() {}

// NamespaceScoped is true: Agents live in namespaces.
func (*AgentREST) NamespaceScoped() bool {
	return true
}

// GetSingularName returns "agent".
func (*AgentREST) GetSingularName() string {
	return "agent"
}
