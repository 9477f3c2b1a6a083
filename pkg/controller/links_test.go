package controller

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

func TestReconcileNamedLinks(t *testing.T) {
	start := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	agent := testAgent()
	soon := metav1.NewTime(start.Add(10 * time.Minute))
	agent.Spec.Share = &v1alpha1.ShareSpec{Links: []v1alpha1.NamedShareLink{
		{Name: "qa"},
		{Name: "demo", ShareLinkSpec: v1alpha1.ShareLinkSpec{Mode: v1alpha1.ShareModeView, ExpiresAt: &soon}},
	}}
	h := newHarness(t, start, agent)
	secretOf := func(link string) (*corev1.Secret, error) {
		s := &corev1.Secret{}
		err := h.client.Get(context.Background(), types.NamespacedName{Namespace: "default", Name: share.LinkSecretName("team-agent", link)}, s)
		return s, err
	}
	linkStatus := func(a *v1alpha1.Agent, name string) *v1alpha1.LinkStatus {
		for i := range a.Status.Share.Links {
			if a.Status.Share.Links[i].Name == name {
				return &a.Status.Share.Links[i]
			}
		}
		return nil
	}

	steps := []struct {
		name        string
		before      func()
		advance     time.Duration
		want        map[string]string // link -> reason; absent links must have no status
		wantSecrets map[string]bool
		wantEvents  []string
		wantRequeue time.Duration
		check       func(*v1alpha1.Agent)
	}{
		{
			name: "two named links without the default link",
			want: map[string]string{"qa": share.ReasonAgentNotReady, "demo": share.ReasonAgentNotReady},
			// The default link stays disabled and has no Secret.
			wantSecrets: map[string]bool{"": false, "qa": true, "demo": true},
			wantEvents:  []string{EventShareEnabled, EventShareEnabled},
			wantRequeue: 10 * time.Minute,
			check: func(a *v1alpha1.Agent) {
				if got := conditionReason(a, v1alpha1.ConditionShareReady); got != "False/Disabled" {
					t.Errorf("ShareReady = %s; the default link is disabled", got)
				}
				if st := linkStatus(a, "demo"); st.Mode != v1alpha1.ShareModeView || st.SecretName != "team-agent-share-demo" || st.ExpiresAt == nil {
					t.Errorf("demo status %+v", st)
				}
				if st := linkStatus(a, "qa"); st.Mode != v1alpha1.ShareModeEdit {
					t.Errorf("qa status %+v", st)
				}
			},
		},
		{
			name: "the listener records viewers on a link's Secret",
			before: func() {
				s, err := secretOf("qa")
				if err != nil {
					t.Fatal(err)
				}
				h.update(s, func() {
					s.Annotations[share.ViewersAnnotation("replica-a")] = "1"
					s.Annotations[share.ViewersAnnotation("replica-b")] = "1"
				})
			},
			want:        map[string]string{"qa": share.ReasonAgentNotReady, "demo": share.ReasonAgentNotReady},
			wantSecrets: map[string]bool{"qa": true, "demo": true},
			wantRequeue: 10 * time.Minute,
			check: func(a *v1alpha1.Agent) {
				if st := linkStatus(a, "qa"); st.Viewers != 2 {
					t.Errorf("qa viewers %d, want 2", st.Viewers)
				}
			},
		},
		{
			name: "one link expires", advance: 10 * time.Minute,
			want:        map[string]string{"qa": share.ReasonAgentNotReady, "demo": share.ReasonExpired},
			wantSecrets: map[string]bool{"qa": true, "demo": true},
			wantEvents:  []string{EventShareExpired},
		},
		{
			name: "one link removed from the spec",
			before: func() {
				a := &v1alpha1.Agent{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "team-agent"}}
				h.update(a, func() { a.Spec.Share.Links = a.Spec.Share.Links[:1] })
			},
			want:        map[string]string{"qa": share.ReasonAgentNotReady},
			wantSecrets: map[string]bool{"qa": true, "demo": false},
			wantEvents:  []string{EventShareDisabled},
		},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			if step.before != nil {
				step.before()
			}
			h.clock.SetTime(h.clock.Now().Add(step.advance))
			res, a, evs := h.reconcile()
			if got := reasons(evs); len(got) != len(step.wantEvents) || (len(got) > 0 && !equalStrings(got, step.wantEvents)) {
				t.Errorf("events %v, want %v", evs, step.wantEvents)
			}
			if res.RequeueAfter != step.wantRequeue {
				t.Errorf("requeue after %s, want %s", res.RequeueAfter, step.wantRequeue)
			}
			if len(a.Status.Share.Links) != len(step.want) {
				t.Errorf("link statuses %+v, want %v", a.Status.Share.Links, step.want)
			}
			for name, reason := range step.want {
				if st := linkStatus(a, name); st == nil || st.Reason != reason {
					t.Errorf("link %s status %+v, want reason %s", name, st, reason)
				}
			}
			for link, want := range step.wantSecrets {
				_, err := secretOf(link)
				if got := err == nil; got != want {
					t.Errorf("Secret of link %q exists %v, want %v (%v)", link, got, want, err)
				} else if err != nil && !apierrors.IsNotFound(err) {
					t.Error(err)
				}
			}
			if step.check != nil {
				step.check(a)
			}
		})
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
