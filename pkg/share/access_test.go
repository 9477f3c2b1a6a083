package share

import (
	"encoding/base64"
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
)

func TestEvaluate(t *testing.T) {
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	ready := []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue}}
	notReady := []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse}}
	at := func(d time.Duration) *metav1.Time { t := metav1.NewTime(now.Add(d)); return &t }

	tests := []struct {
		name       string
		share      *v1alpha1.ShareSpec
		conditions []metav1.Condition
		deleting   bool
		active     bool
		reason     string
	}{
		{name: "no share", conditions: ready, reason: ReasonDisabled},
		{name: "disabled", share: &v1alpha1.ShareSpec{ShareLinkSpec: v1alpha1.ShareLinkSpec{ExpiresAt: at(time.Hour)}}, conditions: ready, reason: ReasonDisabled},
		{name: "active", share: &v1alpha1.ShareSpec{Enabled: true}, conditions: ready, active: true, reason: ReasonActive},
		{name: "active until later", share: &v1alpha1.ShareSpec{Enabled: true, ShareLinkSpec: v1alpha1.ShareLinkSpec{ExpiresAt: at(time.Second)}}, conditions: ready, active: true, reason: ReasonActive},
		{name: "expired at the instant", share: &v1alpha1.ShareSpec{Enabled: true, ShareLinkSpec: v1alpha1.ShareLinkSpec{ExpiresAt: at(0)}}, conditions: ready, reason: ReasonExpired},
		{name: "expired", share: &v1alpha1.ShareSpec{Enabled: true, ShareLinkSpec: v1alpha1.ShareLinkSpec{ExpiresAt: at(-time.Hour)}}, conditions: ready, reason: ReasonExpired},
		{name: "expired beats not ready", share: &v1alpha1.ShareSpec{Enabled: true, ShareLinkSpec: v1alpha1.ShareLinkSpec{ExpiresAt: at(-time.Hour)}}, conditions: notReady, reason: ReasonExpired},
		{name: "agent not ready", share: &v1alpha1.ShareSpec{Enabled: true}, conditions: notReady, reason: ReasonAgentNotReady},
		{name: "agent without conditions", share: &v1alpha1.ShareSpec{Enabled: true}, reason: ReasonAgentNotReady},
		// Deleting an Agent revokes its link at once, even while a finalizer
		// or the garbage collector keeps it in the cluster.
		{name: "agent being deleted", share: &v1alpha1.ShareSpec{Enabled: true}, conditions: ready, deleting: true, reason: ReasonDisabled},
		{name: "agent being deleted after expiry", share: &v1alpha1.ShareSpec{Enabled: true, ShareLinkSpec: v1alpha1.ShareLinkSpec{ExpiresAt: at(-time.Hour)}}, conditions: ready, deleting: true, reason: ReasonDisabled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			agent := &v1alpha1.Agent{Spec: v1alpha1.AgentSpec{Share: tc.share}, Status: v1alpha1.AgentStatus{Conditions: tc.conditions}}
			if tc.deleting {
				agent.DeletionTimestamp = at(-time.Second)
			}
			l, _ := FindLink(agent, "")
			d := Evaluate(agent, l, now)
			if d.Active != tc.active || d.Reason != tc.reason || d.Message == "" {
				t.Errorf("Evaluate() = %+v, want active=%v reason=%s", d, tc.active, tc.reason)
			}
		})
	}
}

func TestIPAllowed(t *testing.T) {
	allowed, err := ParseAllowedIPs([]string{"10.0.0.0/8", "192.168.1.7", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr    string
		allowed []netip.Prefix
		want    bool
	}{
		{addr: "8.8.8.8", want: true},
		{addr: "10.2.3.4", allowed: allowed, want: true},
		{addr: "::ffff:10.2.3.4", allowed: allowed, want: true},
		{addr: "192.168.1.7", allowed: allowed, want: true},
		{addr: "192.168.1.8", allowed: allowed, want: false},
		{addr: "2001:db8:1::5", allowed: allowed, want: true},
		{addr: "2001:db9::5", allowed: allowed, want: false},
		{addr: "11.0.0.1", allowed: allowed, want: false},
	}
	for _, tc := range tests {
		if got := IPAllowed(tc.allowed, netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("IPAllowed(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	if _, err := ParseAllowedIPs([]string{"10.0.0.0/8", "bad"}); err == nil {
		t.Error("ParseAllowedIPs accepted a bad entry")
	}
}

// FuzzValidToken checks the token check against the encoding it guards.
func FuzzValidToken(f *testing.F) {
	tok, _ := NewToken()
	for _, seed := range []string{tok, "", strings.Repeat("A", 43), strings.Repeat("A", 42) + "B", tok + "="} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !ValidToken(s) {
			return
		}
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil || len(b) != TokenBytes || base64.RawURLEncoding.EncodeToString(b) != s {
			t.Fatalf("ValidToken accepted %q", s)
		}
	})
}
