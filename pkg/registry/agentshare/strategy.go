package agentshare

import (
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/apis/subresources/validation"
	"github.com/kubeopencode/share/pkg/share"
)

// This file is the strategy of agents/share, as a registry's strategy.go is
// for a stored resource: how a request is normalised and validated, and how
// it turns into the link written to the Agent's spec.share.

// normalize drops the sub-second part of a requested expiry, which the Agent
// could not store, before the expiry is validated.
func normalize(s *subresourcesv1alpha1.AgentShare) {
	if s.Spec.ExpiresAt != nil {
		t := metav1.NewTime(s.Spec.ExpiresAt.Truncate(time.Second))
		s.Spec.ExpiresAt = &t
	}
}

// validateCreate checks a normalised create on the Agent called name at time
// now.
func validateCreate(name string, req *subresourcesv1alpha1.AgentShare, now time.Time, maxDuration time.Duration) field.ErrorList {
	var errs field.ErrorList
	if req.Name != "" && req.Name != name {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), req.Name, "must be the name of the Agent in the request path"))
	}
	if req.Spec.Link != "" {
		errs = append(errs, share.ValidateLinkName(name, req.Spec.Link, field.NewPath("spec", "link"))...)
	}
	return append(errs, validation.ValidateAgentShareCreate(req, now, maxDuration)...)
}

// validateLinkParameter checks the link query parameter of a get or delete.
func validateLinkParameter(agent, link string) error {
	if link == "" {
		return nil
	}
	if errs := share.ValidateLinkName(agent, link, field.NewPath("link")); len(errs) > 0 {
		return apierrors.NewInvalid(agentShareKind, agent, errs)
	}
	return nil
}

// desiredShare is the link that a valid create asks for at time now. A
// request without an expiry expires at the cap, when there is one. An
// explicit edit mode is stored as the default it is, unset.
func desiredShare(spec subresourcesv1alpha1.AgentShareSpec, now time.Time, maxDuration time.Duration) share.Link {
	out := share.Link{NamedShareLink: kubeopencodev1alpha1.NamedShareLink{Name: spec.Link}, Enabled: true}
	var expiresAt time.Time
	switch {
	case spec.ExpiresAt != nil:
		expiresAt = spec.ExpiresAt.Time
	case spec.ExpiresIn != nil:
		expiresAt = now.Add(spec.ExpiresIn.Duration)
	case maxDuration > 0:
		expiresAt = now.Add(maxDuration)
	}
	if !expiresAt.IsZero() {
		t := metav1.NewTime(expiresAt.Truncate(time.Second))
		out.ExpiresAt = &t
	}
	for _, ip := range spec.AllowedIPs {
		out.AllowedIPs = append(out.AllowedIPs, kubeopencodev1alpha1.IPOrCIDR(ip))
	}
	if spec.MaxUses != nil {
		out.MaxUses = ptr.To(*spec.MaxUses)
	}
	if spec.MaxViewers != nil {
		out.MaxViewers = ptr.To(*spec.MaxViewers)
	}
	if spec.Mode == kubeopencodev1alpha1.ShareModeView {
		out.Mode = kubeopencodev1alpha1.ShareModeView
	}
	return out
}

// setLink writes a link into the Agent's spec and reports whether that
// changed it. The default link, named "", goes into spec.share's inline
// fields, keeping the named links; a disabled default link keeps none of its
// fields. A named link replaces the entry of its name in spec.share.links or
// is added to it; a disabled one leaves the list.
func setLink(a *kubeopencodev1alpha1.Agent, l share.Link) bool {
	if !l.Enabled {
		l = share.Link{NamedShareLink: kubeopencodev1alpha1.NamedShareLink{Name: l.Name}}
	}
	s := a.Spec.Share
	if s == nil {
		if !l.Enabled {
			return false
		}
		s = &kubeopencodev1alpha1.ShareSpec{}
		a.Spec.Share = s
	}
	if l.Name == "" {
		before := *s
		s.Enabled, s.ShareLinkSpec = l.Enabled, l.ShareLinkSpec
		return !apiequality.Semantic.DeepEqual(before, *s)
	}
	return setNamedLink(s, l)
}

// setNamedLink is setLink for a link of spec.share.links.
func setNamedLink(s *kubeopencodev1alpha1.ShareSpec, l share.Link) bool {
	for i := range s.Links {
		if s.Links[i].Name != l.Name {
			continue
		}
		if l.Enabled {
			s.Links[i] = l.NamedShareLink
			return true
		}
		s.Links = append(s.Links[:i:i], s.Links[i+1:]...)
		if len(s.Links) == 0 {
			s.Links = nil
		}
		return true
	}
	if !l.Enabled {
		return false
	}
	s.Links = append(s.Links, l.NamedShareLink)
	return true
}
