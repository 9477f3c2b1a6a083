package share

import (
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
)

func TestReturnLinkUse(t *testing.T) {
	one := int32(1)
	tests := []struct {
		name string
		// before runs between the use and its return.
		before   func(t *testing.T, c client.Client, secret *corev1.Secret)
		wantUses int32
	}{
		{
			name:     "a use given back can be taken again",
			wantUses: 0,
		},
		{
			name: "a rotated link's count is left alone",
			before: func(t *testing.T, c client.Client, secret *corev1.Secret) {
				_, rotated, err := RotateSecret(context.Background(), c, testKeys(), testAgentWithLink(&one), "once", secret)
				if err != nil {
					t.Fatal(err)
				}
				// The new token takes its first use: the old token's
				// return must not give it back.
				if _, err := ConsumeLinkUse(context.Background(), c, c, testRing(), testAgentWithLink(&one), "once", rotated); err != nil {
					t.Fatal(err)
				}
			},
			wantUses: 1,
		},
		{
			name: "a Secret another Agent owns is left alone",
			before: func(t *testing.T, c client.Client, secret *corev1.Secret) {
				secret.Annotations[AnnotationAgentUID] = "uid-2"
				secret.OwnerReferences[0].UID = "uid-2"
				if err := c.Update(context.Background(), secret); err != nil {
					t.Fatal(err)
				}
			},
			wantUses: 1,
		},
		{
			name: "a deleted Secret is nothing to give back to",
			before: func(t *testing.T, c client.Client, secret *corev1.Secret) {
				if err := c.Delete(context.Background(), secret); err != nil {
					t.Fatal(err)
				}
			},
			wantUses: -1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			agent := testAgentWithLink(&one)
			c := fake.NewClientBuilder().WithScheme(testScheme(t)).Build()
			secret, token, _, err := EnsureLinkSecret(ctx, c, c, testKeys(), agent, "once")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ConsumeLinkUse(ctx, c, c, testRing(), agent, "once", token); err != nil {
				t.Fatal(err)
			}
			if tc.before != nil {
				if err := c.Get(ctx, client.ObjectKeyFromObject(secret), secret); err != nil {
					t.Fatal(err)
				}
				tc.before(t, c, secret)
			}
			if err := ReturnLinkUse(ctx, c, c, testRing(), agent, "once", token); err != nil {
				t.Fatalf("ReturnLinkUse: %v", err)
			}
			if tc.wantUses < 0 {
				return
			}
			if err := c.Get(ctx, client.ObjectKeyFromObject(secret), secret); err != nil {
				t.Fatal(err)
			}
			if got := Uses(secret); got != tc.wantUses {
				t.Fatalf("uses %d after the return, want %d", got, tc.wantUses)
			}
			if tc.wantUses == 0 {
				if _, err := ConsumeLinkUse(ctx, c, c, testRing(), agent, "once", token); err != nil {
					t.Fatalf("taking the use given back: %v", err)
				}
				if _, err := ConsumeLinkUse(ctx, c, c, testRing(), agent, "once", token); !errors.Is(err, ErrUsedUp) {
					t.Fatalf("a second use: %v, want ErrUsedUp", err)
				}
			}
		})
	}
}

// A use is given back only once: two returns of one use do not free two.
func TestReturnLinkUseNeverGoesBelowZero(t *testing.T) {
	ctx := context.Background()
	one := int32(1)
	agent := testAgentWithLink(&one)
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).Build()
	secret, token, _, err := EnsureLinkSecret(ctx, c, c, testKeys(), agent, "once")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := ReturnLinkUse(ctx, c, c, testRing(), agent, "once", token); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(secret), secret); err != nil {
		t.Fatal(err)
	}
	if got := Uses(secret); got != 0 {
		t.Fatalf("uses %d, want 0", got)
	}
}

func testAgentWithLink(maxUses *int32) *v1alpha1.Agent {
	agent := testAgent("uid-1")
	agent.Spec.Share = &v1alpha1.ShareSpec{Links: []v1alpha1.ShareLink{{Name: "once", MaxUses: maxUses}}}
	return agent
}
