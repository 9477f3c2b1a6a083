package share

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
)

func TestLinkSecretName(t *testing.T) {
	tests := []struct{ agent, link, want string }{
		{"team-agent", "", "team-agent-share"},
		{"team-agent", "qa", "team-agent-share-qa"},
	}
	for _, tc := range tests {
		if got := LinkSecretName(tc.agent, tc.link); got != tc.want {
			t.Errorf("LinkSecretName(%q, %q) = %q, want %q", tc.agent, tc.link, got, tc.want)
		}
	}
}

func TestValidateLinkName(t *testing.T) {
	longAgent := strings.Repeat("a", 63)
	tests := []struct {
		name, agent, link string
		wantErr           bool
	}{
		{name: "simple", agent: "team-agent", link: "qa"},
		{name: "digits and dashes", agent: "team-agent", link: "demo-2"},
		{name: "longest", agent: longAgent, link: strings.Repeat("b", 63)},
		{name: "too long", agent: "team-agent", link: strings.Repeat("b", 64), wantErr: true},
		{name: "upper case", agent: "team-agent", link: "QA", wantErr: true},
		{name: "dot", agent: "team-agent", link: "q.a", wantErr: true},
		{name: "leading dash", agent: "team-agent", link: "-qa", wantErr: true},
		{name: "slash", agent: "team-agent", link: "../x", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			errs := ValidateLinkName(tc.agent, tc.link, field.NewPath("spec", "link"))
			if (len(errs) > 0) != tc.wantErr {
				t.Fatalf("ValidateLinkName(%q) = %v, wantErr %v", tc.link, errs, tc.wantErr)
			}
			if tc.wantErr && errs[0].Field != "spec.link" {
				t.Errorf("error names %s, want spec.link", errs[0].Field)
			}
		})
	}
}

func TestFindLinkAndEvaluate(t *testing.T) {
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	past := metav1.NewTime(now.Add(-time.Hour))
	ready := []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue}}
	agent := &v1alpha1.Agent{
		ObjectMeta: metav1.ObjectMeta{Name: "team-agent"},
		Spec: v1alpha1.AgentSpec{Share: &v1alpha1.ShareSpec{
			ShareLinkSpec: v1alpha1.ShareLinkSpec{Mode: v1alpha1.ShareModeView},
			Links: []v1alpha1.NamedShareLink{
				{Name: "qa"},
				{Name: "old", ShareLinkSpec: v1alpha1.ShareLinkSpec{ExpiresAt: &past}},
				{Name: "demo", ShareLinkSpec: v1alpha1.ShareLinkSpec{Mode: v1alpha1.ShareModeView}},
			},
		}},
		Status: v1alpha1.AgentStatus{Conditions: ready},
	}
	tests := []struct {
		link     string
		found    bool
		reason   string
		readOnly bool
	}{
		// The default link is disabled, and named links do not need it.
		{link: "", found: true, reason: ReasonDisabled, readOnly: true},
		{link: "qa", found: true, reason: ReasonActive},
		{link: "old", found: true, reason: ReasonExpired},
		{link: "demo", found: true, reason: ReasonActive, readOnly: true},
		{link: "gone", found: false},
	}
	for _, tc := range tests {
		t.Run(LinkDisplayName(tc.link), func(t *testing.T) {
			l, ok := FindLink(agent, tc.link)
			if ok != tc.found {
				t.Fatalf("FindLink(%q) found %v", tc.link, ok)
			}
			if !ok {
				return
			}
			if d := Evaluate(agent, l, now); d.Reason != tc.reason || d.Message == "" {
				t.Errorf("Evaluate(%q) = %+v, want %s", tc.link, d, tc.reason)
			}
			if l.ReadOnly() != tc.readOnly {
				t.Errorf("ReadOnly() = %v", l.ReadOnly())
			}
		})
	}
	if got := LinkNames(agent); strings.Join(got, ",") != "qa,old,demo" {
		t.Errorf("LinkNames = %v", got)
	}
	if s := provenSecret(t, agent, "qa", "tok"); s.Name != "team-agent-share-qa" || s.Labels[LabelShareLink] != "qa" {
		t.Errorf("NewLinkSecret: %s %v", s.Name, s.Labels)
	}
	if s := provenSecret(t, agent, "", "tok"); s.Labels[LabelShareLink] != "" {
		t.Errorf("the default link's Secret has a link label: %v", s.Labels)
	}
}
