// Package validation checks AgentShare requests made to the agents/share
// subresource.
package validation

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation/field"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	agentvalidation "github.com/kubeopencode/share/pkg/apis/kubeopencode/validation"
	"github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
)

// Modes are the values of spec.mode; empty means edit.
var Modes = []kubeopencodev1alpha1.ShareMode{kubeopencodev1alpha1.ShareModeEdit, kubeopencodev1alpha1.ShareModeView}

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

	errs = append(errs, agentvalidation.ValidateAllowedIPs(s.Spec.AllowedIPs, spec.Child("allowedIPs"))...)
	if m := s.Spec.MaxUses; m != nil && (*m < 1 || *m > agentvalidation.MaxUses) {
		errs = append(errs, field.Invalid(spec.Child("maxUses"), *m, fmt.Sprintf("must be between 1 and %d", agentvalidation.MaxUses)))
	}
	if m := s.Spec.MaxViewers; m != nil && (*m < 1 || *m > agentvalidation.MaxViewers) {
		errs = append(errs, field.Invalid(spec.Child("maxViewers"), *m, fmt.Sprintf("must be between 1 and %d", agentvalidation.MaxViewers)))
	}
	if s.Spec.Mode != "" && !sets.New(Modes...).Has(s.Spec.Mode) {
		errs = append(errs, field.NotSupported(spec.Child("mode"), s.Spec.Mode, Modes))
	}
	return errs
}
