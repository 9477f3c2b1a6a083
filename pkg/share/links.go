package share

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	k8svalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/apis/kubeopencode/validation"
)

const (
	// LabelShareLink names the link a share Secret holds the token of. The
	// Secret of the default link has none.
	LabelShareLink = "kubeopencode.io/share-link"
	// AnnotationViewersPrefix starts the annotations in which each share
	// listener replica records how many pages have the link's terminal open
	// through it (see ViewersAnnotation). The controller, the only writer of
	// the Agent's status, copies their sum there.
	AnnotationViewersPrefix = "viewers.kubeopencode.io/"
)

// Link is one share link of an Agent: the default link, named "", which
// spec.share's inline fields configure, or a named one of spec.share.links.
type Link struct {
	v1alpha1.NamedShareLink
	// Enabled is whether the link gives access at all. A named link is
	// enabled while it is listed in spec.share.links.
	Enabled bool
}

// ReadOnly reports whether the link's holder may only watch.
func (l Link) ReadOnly() bool { return l.Mode == v1alpha1.ShareModeView }

// ModeOrDefault returns the link's mode, edit when unset.
func (l Link) ModeOrDefault() v1alpha1.ShareMode {
	if l.Mode == "" {
		return v1alpha1.ShareModeEdit
	}
	return l.Mode
}

// DisplayName names the link in Events and logs: "default" for the default
// link.
func (l Link) DisplayName() string { return LinkDisplayName(l.Name) }

// LinkDisplayName names a link in Events and logs.
func LinkDisplayName(name string) string {
	if name == "" {
		return "default"
	}
	return name
}

// FindLink returns the Agent's link called name: the default link for an
// empty name, which always exists (enabled or not), or the named link, which
// exists while it is listed.
func FindLink(agent *v1alpha1.Agent, name string) (Link, bool) {
	s := agent.Spec.Share
	if name == "" {
		if s == nil {
			return Link{}, true
		}
		return Link{NamedShareLink: v1alpha1.NamedShareLink{ShareLinkSpec: s.ShareLinkSpec}, Enabled: s.Enabled}, true
	}
	if s == nil {
		return Link{}, false
	}
	for i := range s.Links {
		if s.Links[i].Name == name {
			return Link{NamedShareLink: s.Links[i], Enabled: true}, true
		}
	}
	return Link{}, false
}

// Links returns every link of the Agent: the default link first, enabled or
// not, then the named links in the order of its spec.
func Links(agent *v1alpha1.Agent) []Link {
	def, _ := FindLink(agent, "")
	out := []Link{def}
	if agent.Spec.Share != nil {
		for i := range agent.Spec.Share.Links {
			out = append(out, Link{NamedShareLink: agent.Spec.Share.Links[i], Enabled: true})
		}
	}
	return out
}

// LinkNames returns the names of the Agent's named links.
func LinkNames(agent *v1alpha1.Agent) []string {
	if agent.Spec.Share == nil {
		return nil
	}
	var out []string
	for _, l := range agent.Spec.Share.Links {
		out = append(out, l.Name)
	}
	return out
}

// LinkSecretName returns the name of the Secret of an Agent's link:
// {agent}-share for the default link, {agent}-share-{link} for a named one.
func LinkSecretName(agentName, link string) string {
	if link == "" {
		return SecretName(agentName)
	}
	return SecretName(agentName) + "-" + link
}

// ValidateLinkName checks the name of a named link for an Agent: the link
// name rules of the API (validation.ValidateLinkName), and that it makes a
// valid Secret name with the Agent's. An empty name is the default link and
// is not checked here.
func ValidateLinkName(agentName, name string, path *field.Path) field.ErrorList {
	errs := validation.ValidateLinkName(name, path)
	if len(errs) == 0 {
		for _, msg := range k8svalidation.IsDNS1123Subdomain(LinkSecretName(agentName, name)) {
			errs = append(errs, field.Invalid(path, name, fmt.Sprintf("makes the Secret name %s, which %s", LinkSecretName(agentName, name), msg)))
		}
	}
	return errs
}

// Evaluate decides whether a link of the Agent gives access at now, from
// the link, the Agent's Ready condition and whether it is being deleted. The
// token's existence and use count are the caller's concern.
func Evaluate(agent *v1alpha1.Agent, l Link, now time.Time) Decision {
	what := "Share link"
	if l.Name != "" {
		what = fmt.Sprintf("Share link %q", l.Name)
	}
	if !l.Enabled {
		return Decision{Reason: ReasonDisabled, Message: what + " is disabled"}
	}
	if agent.DeletionTimestamp != nil {
		// Deleting the Agent ends its links at once: their Secrets may
		// outlive it for as long as finalizers or the garbage collector
		// take, and must open nothing meanwhile.
		return Decision{Reason: ReasonDisabled, Message: what + " is disabled: the Agent is being deleted"}
	}
	d := Decision{ExpiresAt: l.ExpiresAt}
	if Expired(l.ExpiresAt, now) {
		d.Reason, d.Message = ReasonExpired, fmt.Sprintf("%s expired at %s", what, l.ExpiresAt.UTC().Format(time.RFC3339))
		return d
	}
	if !meta.IsStatusConditionTrue(agent.Status.Conditions, v1alpha1.ConditionReady) {
		d.Reason, d.Message = ReasonAgentNotReady, "Agent is not ready"
		return d
	}
	d.Active, d.Reason, d.Message = true, ReasonActive, what+" is active"
	return d
}

// AllowedIPStrings returns a link's allowed addresses as strings.
func AllowedIPStrings(l Link) []string {
	if len(l.AllowedIPs) == 0 {
		return nil
	}
	out := make([]string, len(l.AllowedIPs))
	for i, ip := range l.AllowedIPs {
		out[i] = string(ip)
	}
	return out
}
