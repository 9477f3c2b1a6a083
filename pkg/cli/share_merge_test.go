package cli

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/utils/ptr"

	subresourcesv1alpha1 "github.com/kubeopencode/share/pkg/apis/subresources/v1alpha1"
)

func TestShareRequestKeepsWhatIsNotGiven(t *testing.T) {
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	later := metav1.NewTime(now.Add(2 * time.Hour))
	past := metav1.NewTime(now.Add(-time.Hour))
	flagTime := metav1.NewTime(now.Add(3 * time.Hour))
	current := &subresourcesv1alpha1.AgentShareStatus{
		Active: true, Token: "TOKEN", ExpiresAt: &later, AllowedIPs: []string{"10.0.0.0/8"},
		Mode: "view", MaxUses: ptr.To[int32](3), MaxViewers: ptr.To[int32](5),
	}
	kept := subresourcesv1alpha1.AgentShareSpec{
		ExpiresAt: &later, AllowedIPs: []string{"10.0.0.0/8"}, Mode: "view", MaxUses: ptr.To[int32](3), MaxViewers: ptr.To[int32](5),
	}
	tests := []struct {
		name    string
		args    []string
		current *subresourcesv1alpha1.AgentShareStatus
		want    subresourcesv1alpha1.AgentShareSpec
	}{
		{name: "new link takes the flags alone", args: []string{"--allowed-ips", "10.0.0.0/8"},
			want: subresourcesv1alpha1.AgentShareSpec{AllowedIPs: []string{"10.0.0.0/8"}}},
		{name: "bare re-run keeps everything", current: current, want: kept},
		{name: "expires-in replaces the expiry only", args: []string{"--expires-in", "1h"}, current: current,
			want: subresourcesv1alpha1.AgentShareSpec{ExpiresIn: &metav1.Duration{Duration: time.Hour}, AllowedIPs: []string{"10.0.0.0/8"}, Mode: "view", MaxUses: ptr.To[int32](3), MaxViewers: ptr.To[int32](5)}},
		{name: "expires-at replaces the expiry only", args: []string{"--expires-at", flagTime.Format(time.RFC3339)}, current: current,
			want: subresourcesv1alpha1.AgentShareSpec{ExpiresAt: &flagTime, AllowedIPs: []string{"10.0.0.0/8"}, Mode: "view", MaxUses: ptr.To[int32](3), MaxViewers: ptr.To[int32](5)}},
		{name: "empty allowed-ips clears them", args: []string{"--allowed-ips="}, current: current,
			want: subresourcesv1alpha1.AgentShareSpec{ExpiresAt: &later, AllowedIPs: []string{}, Mode: "view", MaxUses: ptr.To[int32](3), MaxViewers: ptr.To[int32](5)}},
		{name: "read-only=false makes an edit link", args: []string{"--read-only=false"}, current: current,
			want: subresourcesv1alpha1.AgentShareSpec{ExpiresAt: &later, AllowedIPs: []string{"10.0.0.0/8"}, Mode: "edit", MaxUses: ptr.To[int32](3), MaxViewers: ptr.To[int32](5)}},
		{name: "limits given replace the kept ones", args: []string{"--max-uses", "1", "--max-viewers", "9"}, current: current,
			want: subresourcesv1alpha1.AgentShareSpec{ExpiresAt: &later, AllowedIPs: []string{"10.0.0.0/8"}, Mode: "view", MaxUses: ptr.To[int32](1), MaxViewers: ptr.To[int32](9)}},
		{name: "rotate keeps the settings", args: []string{"--rotate"}, current: current,
			want: func() subresourcesv1alpha1.AgentShareSpec { s := *kept.DeepCopy(); s.Rotate = true; return s }()},
		{name: "an expired link gets the server's expiry", current: &subresourcesv1alpha1.AgentShareStatus{Token: "TOKEN", ExpiresAt: &past},
			want: subresourcesv1alpha1.AgentShareSpec{}},
		{name: "named link", args: []string{"--link", "qa"}, current: &subresourcesv1alpha1.AgentShareStatus{Token: "TOKEN", AllowedIPs: []string{"192.168.1.7"}},
			want: subresourcesv1alpha1.AgentShareSpec{Link: "qa", AllowedIPs: []string{"192.168.1.7"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := NewShareOptions(genericiooptions.NewTestIOStreamsDiscard())
			o.now = func() time.Time { return now }
			cmd := newCmdShare(genericclioptions.NewConfigFlags(false), o)
			if err := cmd.Flags().Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if err := o.completeFlags(cmd.Flags()); err != nil {
				t.Fatal(err)
			}
			got := o.request(tc.current).Spec
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("request spec (-want +got):\n%s", diff)
			}
		})
	}
}

func TestShareChanges(t *testing.T) {
	t1 := metav1.NewTime(time.Date(2026, 5, 1, 2, 0, 0, 0, time.UTC))
	t2 := metav1.NewTime(time.Date(2026, 5, 1, 4, 0, 0, 0, time.UTC))
	base := subresourcesv1alpha1.AgentShareStatus{Token: "A", ExpiresAt: &t1, AllowedIPs: []string{"10.0.0.0/8"}, Mode: "edit"}
	with := func(f func(*subresourcesv1alpha1.AgentShareStatus)) *subresourcesv1alpha1.AgentShareStatus {
		s := base.DeepCopy()
		f(s)
		return s
	}
	tests := []struct {
		name          string
		before, after *subresourcesv1alpha1.AgentShareStatus
		want          []string
	}{
		{name: "new link", before: nil, after: &base},
		{name: "nothing", before: &base, after: with(func(*subresourcesv1alpha1.AgentShareStatus) {})},
		{name: "expiry", before: &base, after: with(func(s *subresourcesv1alpha1.AgentShareStatus) { s.ExpiresAt = &t2 }),
			want: []string{"Expires: 2026-05-01T02:00:00Z -> 2026-05-01T04:00:00Z"}},
		{name: "ips cleared", before: &base, after: with(func(s *subresourcesv1alpha1.AgentShareStatus) { s.AllowedIPs = nil }),
			want: []string{"Allowed IPs: 10.0.0.0/8 -> any"}},
		{name: "empty mode is edit", before: &base, after: with(func(s *subresourcesv1alpha1.AgentShareStatus) { s.Mode = "" })},
		{name: "view, limits and token", before: &base, after: with(func(s *subresourcesv1alpha1.AgentShareStatus) {
			s.Mode, s.MaxUses, s.MaxViewers, s.Token, s.ExpiresAt = "view", ptr.To[int32](1), ptr.To[int32](5), "B", nil
		}), want: []string{"Mode: edit -> view", "Expires: 2026-05-01T02:00:00Z -> never", "Max uses: none -> 1", "Max viewers: none -> 5", "Token: replaced"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, shareChanges(tc.before, tc.after)); diff != "" {
				t.Errorf("changes (-want +got):\n%s", diff)
			}
		})
	}
}
