package agentshare

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

// answer is the AgentShare that a create, get or delete returns about a link
// of the Agent: agentShare with the link's use and viewer counts and, about
// the default link, the names of the named links.
func (r *REST) answer(agent *kubeopencodev1alpha1.Agent, link, token string, uses, viewers int32, now time.Time) *subresourcesv1alpha1.AgentShare {
	out := r.agentShare(agent, link, token, now)
	withUses(out, agent, link, uses)
	out.Status.Viewers = viewers
	if link == "" {
		out.Status.Links = share.LinkNames(agent)
	}
	return out
}

// agentShare describes a link of the Agent. The token is given only while the
// link is enabled and not expired; an Agent that is not ready yet still gets
// it, since the link works as soon as the Agent is ready.
func (r *REST) agentShare(agent *kubeopencodev1alpha1.Agent, link, token string, now time.Time) *subresourcesv1alpha1.AgentShare {
	l, _ := share.FindLink(agent, link)
	d := share.Evaluate(agent, l, now)
	out := &subresourcesv1alpha1.AgentShare{
		ObjectMeta: metav1.ObjectMeta{Name: agent.Name, Namespace: agent.Namespace},
		Spec:       subresourcesv1alpha1.AgentShareSpec{Link: link},
		Status:     subresourcesv1alpha1.AgentShareStatus{Active: d.Active, Reason: d.Reason, Link: link},
	}
	if !l.Enabled {
		return out
	}
	mode := l.ModeOrDefault()
	out.Spec.ExpiresAt = l.ExpiresAt.DeepCopy()
	out.Spec.AllowedIPs = share.AllowedIPStrings(l)
	out.Spec.Mode = mode
	out.Status.ExpiresAt = l.ExpiresAt.DeepCopy()
	out.Status.AllowedIPs = share.AllowedIPStrings(l)
	out.Status.Mode = mode
	if l.MaxViewers != nil {
		out.Spec.MaxViewers = ptr.To(*l.MaxViewers)
		out.Status.MaxViewers = ptr.To(*l.MaxViewers)
	}
	if token != "" && d.Reason != share.ReasonExpired {
		out.Status.Token = token
		out.Status.Path = share.Path(token)
		out.Status.URL = share.URL(r.publicURL, token)
	}
	return out
}

// withUses adds the use count of a link limited by maxUses to what agentShare
// made, and turns an active link that has opened all its connections off.
func withUses(out *subresourcesv1alpha1.AgentShare, agent *kubeopencodev1alpha1.Agent, link string, uses int32) {
	l, ok := share.FindLink(agent, link)
	if !ok || !l.Enabled || l.MaxUses == nil {
		return
	}
	max := *l.MaxUses
	out.Spec.MaxUses = ptr.To(max)
	out.Status.MaxUses = ptr.To(max)
	out.Status.Uses = uses
	if uses >= max && out.Status.Active {
		out.Status.Active, out.Status.Reason = false, share.ReasonUsedUp
	}
}
