package controller

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

func TestShareState(t *testing.T) {
	start := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *metav1.Time { t := metav1.NewTime(start.Add(d)); return &t }
	ready := []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue}}
	notReady := []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse}}
	const url = "https://share.example.com"

	tests := []struct {
		name string
		// advance moves the fake clock before the evaluation.
		advance     time.Duration
		share       *v1alpha1.ShareSpec
		conditions  []metav1.Condition
		secret      secretState
		publicURL   string
		wantStatus  metav1.ConditionStatus
		wantReason  string
		wantShare   *v1alpha1.ShareStatus
		wantExpires time.Duration
	}{
		{
			name: "no share", conditions: ready, secret: secretAbsent,
			wantStatus: metav1.ConditionFalse, wantReason: share.ReasonDisabled,
			wantShare: &v1alpha1.ShareStatus{},
		},
		{
			name: "disabled with an expiry", share: &v1alpha1.ShareSpec{ShareLinkSpec: v1alpha1.ShareLinkSpec{ExpiresAt: at(time.Hour)}}, conditions: ready, secret: secretAbsent,
			wantStatus: metav1.ConditionFalse, wantReason: share.ReasonDisabled,
			wantShare: &v1alpha1.ShareStatus{},
		},
		{
			name: "active without expiry", share: &v1alpha1.ShareSpec{Enabled: true}, conditions: ready, secret: secretOwned, publicURL: url,
			wantStatus: metav1.ConditionTrue, wantReason: share.ReasonActive,
			wantShare: &v1alpha1.ShareStatus{SecretName: "team-agent-share", Active: true, URL: url},
		},
		{
			name: "active until expiry", share: &v1alpha1.ShareSpec{Enabled: true, ShareLinkSpec: v1alpha1.ShareLinkSpec{ExpiresAt: at(time.Hour)}}, conditions: ready, secret: secretOwned,
			wantStatus: metav1.ConditionTrue, wantReason: share.ReasonActive,
			wantShare:   &v1alpha1.ShareStatus{SecretName: "team-agent-share", Active: true, ExpiresAt: at(time.Hour)},
			wantExpires: time.Hour,
		},
		{
			name: "clock moved towards expiry", advance: 59 * time.Minute, share: &v1alpha1.ShareSpec{Enabled: true, ShareLinkSpec: v1alpha1.ShareLinkSpec{ExpiresAt: at(time.Hour)}}, conditions: ready, secret: secretOwned,
			wantStatus: metav1.ConditionTrue, wantReason: share.ReasonActive,
			wantShare:   &v1alpha1.ShareStatus{SecretName: "team-agent-share", Active: true, ExpiresAt: at(time.Hour)},
			wantExpires: time.Minute,
		},
		{
			name: "clock at expiry", advance: time.Hour, share: &v1alpha1.ShareSpec{Enabled: true, ShareLinkSpec: v1alpha1.ShareLinkSpec{ExpiresAt: at(time.Hour)}}, conditions: ready, secret: secretOwned, publicURL: url,
			wantStatus: metav1.ConditionFalse, wantReason: share.ReasonExpired,
			wantShare: &v1alpha1.ShareStatus{SecretName: "team-agent-share", ExpiresAt: at(time.Hour), URL: url},
		},
		{
			name: "clock past expiry", advance: 2 * time.Hour, share: &v1alpha1.ShareSpec{Enabled: true, ShareLinkSpec: v1alpha1.ShareLinkSpec{ExpiresAt: at(time.Hour)}}, conditions: ready, secret: secretOwned,
			wantStatus: metav1.ConditionFalse, wantReason: share.ReasonExpired,
			wantShare: &v1alpha1.ShareStatus{SecretName: "team-agent-share", ExpiresAt: at(time.Hour)},
		},
		{
			name: "expired beats not ready", advance: 2 * time.Hour, share: &v1alpha1.ShareSpec{Enabled: true, ShareLinkSpec: v1alpha1.ShareLinkSpec{ExpiresAt: at(time.Hour)}}, conditions: notReady, secret: secretOwned,
			wantStatus: metav1.ConditionFalse, wantReason: share.ReasonExpired,
			wantShare: &v1alpha1.ShareStatus{SecretName: "team-agent-share", ExpiresAt: at(time.Hour)},
		},
		{
			name: "agent not ready still waits for expiry", share: &v1alpha1.ShareSpec{Enabled: true, ShareLinkSpec: v1alpha1.ShareLinkSpec{ExpiresAt: at(time.Hour)}}, conditions: notReady, secret: secretOwned,
			wantStatus: metav1.ConditionFalse, wantReason: share.ReasonAgentNotReady,
			wantShare:   &v1alpha1.ShareStatus{SecretName: "team-agent-share", ExpiresAt: at(time.Hour)},
			wantExpires: time.Hour,
		},
		{
			name: "agent without conditions", share: &v1alpha1.ShareSpec{Enabled: true}, secret: secretOwned,
			wantStatus: metav1.ConditionFalse, wantReason: share.ReasonAgentNotReady,
			wantShare: &v1alpha1.ShareStatus{SecretName: "team-agent-share"},
		},
		{
			name: "foreign secret", share: &v1alpha1.ShareSpec{Enabled: true, ShareLinkSpec: v1alpha1.ShareLinkSpec{ExpiresAt: at(time.Hour)}}, conditions: ready, secret: secretForeign, publicURL: url,
			wantStatus: metav1.ConditionFalse, wantReason: share.ReasonSecretConflict,
			wantShare: &v1alpha1.ShareStatus{ExpiresAt: at(time.Hour)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktesting.NewFakePassiveClock(start)
			clk.SetTime(start.Add(tc.advance))
			agent := &v1alpha1.Agent{
				ObjectMeta: metav1.ObjectMeta{Name: "team-agent", Namespace: "default"},
				Spec:       v1alpha1.AgentSpec{Share: tc.share},
				Status:     v1alpha1.AgentStatus{Conditions: tc.conditions},
			}
			cond, status, untilExpiry := shareState(agent, tc.secret, tc.publicURL, clk.Now())
			if cond.Type != v1alpha1.ConditionShareReady || cond.Status != tc.wantStatus || cond.Reason != tc.wantReason || cond.Message == "" {
				t.Errorf("condition = %+v, want %s/%s with a message", cond, tc.wantStatus, tc.wantReason)
			}
			if diff := cmp.Diff(tc.wantShare, status); diff != "" {
				t.Errorf("status.share (-want +got):\n%s", diff)
			}
			if untilExpiry != tc.wantExpires {
				t.Errorf("time until expiry = %v, want %v", untilExpiry, tc.wantExpires)
			}
		})
	}
}

func TestFingerprint(t *testing.T) {
	a, _ := share.NewToken()
	b, _ := share.NewToken()
	first, again := fingerprint(a), fingerprint(a)
	if len(first) != 16 || first != again || first == fingerprint(b) {
		t.Errorf("fingerprints %q and %q", fingerprint(a), fingerprint(b))
	}
}
