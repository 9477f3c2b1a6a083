package validation

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	agentvalidation "github.com/kubeopencode/share/pkg/apis/kubeopencode/validation"
	"github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

func TestValidateAgentShareCreate(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { t := metav1.NewTime(now.Add(d)); return &t }
	in := func(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }
	many := make([]string, agentvalidation.MaxAllowedIPs+1)
	for i := range many {
		many[i] = "10.0.0.1"
	}

	tests := []struct {
		name   string
		spec   v1alpha1.AgentShareSpec
		max    time.Duration
		fields []string
	}{
		{name: "empty"},
		{name: "expires in", spec: v1alpha1.AgentShareSpec{ExpiresIn: in(time.Hour)}},
		{name: "expires at", spec: v1alpha1.AgentShareSpec{ExpiresAt: at(time.Hour)}},
		{name: "both", spec: v1alpha1.AgentShareSpec{ExpiresAt: at(time.Hour), ExpiresIn: in(time.Hour)}, fields: []string{"spec.expiresIn"}},
		{name: "past", spec: v1alpha1.AgentShareSpec{ExpiresAt: at(-time.Second)}, fields: []string{"spec.expiresAt"}},
		{name: "now", spec: v1alpha1.AgentShareSpec{ExpiresAt: at(0)}, fields: []string{"spec.expiresAt"}},
		{name: "negative duration", spec: v1alpha1.AgentShareSpec{ExpiresIn: in(-time.Minute)}, fields: []string{"spec.expiresIn"}},
		{name: "zero duration", spec: v1alpha1.AgentShareSpec{ExpiresIn: in(0)}, fields: []string{"spec.expiresIn"}},
		{name: "over the cap in", spec: v1alpha1.AgentShareSpec{ExpiresIn: in(49 * time.Hour)}, max: 48 * time.Hour, fields: []string{"spec.expiresIn"}},
		{name: "over the cap at", spec: v1alpha1.AgentShareSpec{ExpiresAt: at(49 * time.Hour)}, max: 48 * time.Hour, fields: []string{"spec.expiresAt"}},
		{name: "at the cap", spec: v1alpha1.AgentShareSpec{ExpiresIn: in(48 * time.Hour)}, max: 48 * time.Hour},
		{name: "good ips", spec: v1alpha1.AgentShareSpec{AllowedIPs: []string{"10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "::1"}}},
		{
			name:   "bad ips",
			spec:   v1alpha1.AgentShareSpec{AllowedIPs: []string{"10.0.0.0/8", "10.0.0.0/33", "nope", "fe80::1%eth0", "10.0.0.0/8"}},
			fields: []string{"spec.allowedIPs[1]", "spec.allowedIPs[2]", "spec.allowedIPs[3]", "spec.allowedIPs[4]"},
		},
		{name: "too many ips", spec: v1alpha1.AgentShareSpec{AllowedIPs: many}, fields: []string{"spec.allowedIPs"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			errs := ValidateAgentShareCreate(&v1alpha1.AgentShare{Spec: tc.spec}, now, tc.max)
			var got []string
			for _, e := range errs {
				got = append(got, e.Field)
			}
			if diff := cmp.Diff(tc.fields, got); diff != "" {
				t.Errorf("error fields (-want +got):\n%s\nerrors: %v", diff, errs)
			}
		})
	}
}

// FuzzAgentShareCreate decodes request bodies as the API server would and
// validates them: no input may panic, and an accepted request must describe
// a link the listener can enforce.
func FuzzAgentShareCreate(f *testing.F) {
	for _, seed := range []string{
		`{}`, `{"spec":{"expiresIn":"24h","allowedIPs":["10.0.0.0/8"]}}`, `{"spec":{"expiresAt":"2030-01-01T00:00:00Z"}}`,
		`{"spec":{"expiresIn":"-1h"}}`, `{"spec":{"allowedIPs":["1.2.3.4/33","x"]}}`, `{"spec":{"rotate":true}}`,
	} {
		f.Add([]byte(seed))
	}
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		s := &v1alpha1.AgentShare{}
		if err := json.Unmarshal(body, s); err != nil {
			return
		}
		if errs := ValidateAgentShareCreate(s, now, 48*time.Hour); len(errs) > 0 {
			return
		}
		if s.Spec.ExpiresIn != nil && (s.Spec.ExpiresIn.Duration <= 0 || s.Spec.ExpiresIn.Duration > 48*time.Hour) {
			t.Fatalf("accepted expiresIn %s", s.Spec.ExpiresIn.Duration)
		}
		if s.Spec.ExpiresAt != nil && !s.Spec.ExpiresAt.After(now) {
			t.Fatalf("accepted past expiresAt %s", s.Spec.ExpiresAt)
		}
		if _, err := share.ParseAllowedIPs(s.Spec.AllowedIPs); err != nil {
			t.Fatalf("accepted allowedIPs the listener cannot parse: %v", err)
		}
	})
}
