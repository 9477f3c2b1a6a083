// Package validation checks AgentShare requests made to the agents/share
// subresource.
package validation

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

// MaxAllowedIPs bounds the allowedIPs list, as the Agent CRD does.
const MaxAllowedIPs = 64

// MaxUses bounds maxUses, as the Agent CRD does.
const MaxUses = 1000

// MaxViewers bounds maxViewers, as the Agent CRD does.
const MaxViewers = 1000

// Modes are the values of spec.mode; empty means edit.
var Modes = []string{"edit", "view"}

// ValidateAgentShareCreate validates the body of a create on agents/share at
// time now. maxDuration, when positive, bounds how far in the future the link
// may expire.
func ValidateAgentShareCreate(s *v1alpha1.AgentShare, now time.Time, maxDuration time.Duration) field.ErrorList {
	var errs field.ErrorList
	spec := field.NewPath("spec")

	switch {
	case s.Spec.ExpiresAt != nil && s.Spec.ExpiresIn != nil:
		errs = append(errs, field.Forbidden(spec.Child("expiresIn"), "may not be set together with spec.expiresAt"))
	case s.Spec.ExpiresIn != nil:
		d := s.Spec.ExpiresIn.Duration
		if d <= 0 {
			errs = append(errs, field.Invalid(spec.Child("expiresIn"), s.Spec.ExpiresIn.Duration.String(), "must be a positive duration"))
		} else if maxDuration > 0 && d > maxDuration {
			errs = append(errs, field.Invalid(spec.Child("expiresIn"), d.String(), fmt.Sprintf("must be at most %s", maxDuration)))
		}
	case s.Spec.ExpiresAt != nil:
		t := s.Spec.ExpiresAt.Time
		if !t.After(now) {
			errs = append(errs, field.Invalid(spec.Child("expiresAt"), t.UTC().Format(time.RFC3339), "must be in the future"))
		} else if maxDuration > 0 && t.Sub(now) > maxDuration {
			errs = append(errs, field.Invalid(spec.Child("expiresAt"), t.UTC().Format(time.RFC3339), fmt.Sprintf("must be at most %s from now", maxDuration)))
		}
	}

	errs = append(errs, ValidateAllowedIPs(s.Spec.AllowedIPs, spec.Child("allowedIPs"))...)
	if m := s.Spec.MaxUses; m != nil && (*m < 1 || *m > MaxUses) {
		errs = append(errs, field.Invalid(spec.Child("maxUses"), *m, fmt.Sprintf("must be between 1 and %d", MaxUses)))
	}
	if m := s.Spec.MaxViewers; m != nil && (*m < 1 || *m > MaxViewers) {
		errs = append(errs, field.Invalid(spec.Child("maxViewers"), *m, fmt.Sprintf("must be between 1 and %d", MaxViewers)))
	}
	if s.Spec.Mode != "" && !sets.New(Modes...).Has(s.Spec.Mode) {
		errs = append(errs, field.NotSupported(spec.Child("mode"), s.Spec.Mode, Modes))
	}
	return errs
}

// ValidateAllowedIPs checks a list of CIDR ranges and single addresses.
func ValidateAllowedIPs(list []string, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(list) > MaxAllowedIPs {
		errs = append(errs, field.TooMany(path, len(list), MaxAllowedIPs))
		return errs
	}
	seen := sets.New[string]()
	for i, s := range list {
		if _, err := share.ParseIPOrCIDR(s); err != nil {
			errs = append(errs, field.Invalid(path.Index(i), s, "must be an IP address or a CIDR range, such as 10.0.0.0/8"))
			continue
		}
		if seen.Has(s) {
			errs = append(errs, field.Duplicate(path.Index(i), s))
		}
		seen.Insert(s)
	}
	return errs
}
