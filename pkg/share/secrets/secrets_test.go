package secrets

import (
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/sharetest"
)

func testAgent(uid types.UID) *v1alpha1.Agent {
	return &v1alpha1.Agent{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "Agent"},
		ObjectMeta: metav1.ObjectMeta{Name: "team-agent", Namespace: "default", UID: uid},
	}
}

func testRing() *share.KeyRing { return sharetest.Ring() }

func testKeys() share.Keys { return sharetest.Keys() }

// provenSecret is the Secret of the link holding token, proven by testRing.
func provenSecret(t *testing.T, agent *v1alpha1.Agent, link, token string) *corev1.Secret {
	t.Helper()
	return sharetest.Secret(agent, link, token)
}

func TestEnsure(t *testing.T) {
	ctx := context.Background()
	agent := testAgent("uid-1")
	c := fake.NewClientBuilder().WithScheme(clientscheme.Scheme).Build()

	secret, token, rejected, err := Ensure(ctx, c, c, testKeys(), agent, "")
	if err != nil || rejected {
		t.Fatal(rejected, err)
	}
	if secret.Name != "team-agent-share" || len(token) != share.TokenLength || !share.OwnedBy(secret, agent.UID) {
		t.Fatalf("secret %s, token %q, owned %v", secret.Name, token, share.OwnedBy(secret, agent.UID))
	}
	if secret.Labels[share.LabelShareSecret] != "true" || secret.Labels[share.LabelAgent] != agent.Name {
		t.Errorf("labels = %v", secret.Labels)
	}

	_, again, _, err := Ensure(ctx, c, c, testKeys(), agent, "")
	if err != nil || again != token {
		t.Fatalf("second EnsureSecret: token %q, err %v; want the same token", again, err)
	}

	// Another Agent of the same name (deleted and recreated) must not get it.
	if _, _, _, err := Ensure(ctx, c, c, testKeys(), testAgent("uid-2"), ""); !errors.Is(err, share.ErrForeignSecret) {
		t.Fatalf("EnsureSecret for a recreated Agent: err %v, want share.ErrForeignSecret", err)
	}
	if deleted, err := Delete(ctx, c, c, testAgent("uid-2"), ""); err != nil || deleted {
		t.Fatalf("DeleteSecret of a foreign Secret: deleted %v, err %v", deleted, err)
	}

	_, rotated, err := Rotate(ctx, c, testKeys(), agent, "", secret)
	if err != nil || rotated == token || !share.ValidToken(rotated) {
		t.Fatalf("Rotate: %q, %v", rotated, err)
	}
	// A rotation from a stale read loses instead of minting a second token.
	if _, _, err := Rotate(ctx, c, testKeys(), agent, "", secret); !apierrors.IsConflict(err) {
		t.Fatalf("stale Rotate: err %v, want a conflict", err)
	}

	if deleted, err := Delete(ctx, c, c, agent, ""); err != nil || !deleted {
		t.Fatalf("DeleteSecret: deleted %v, err %v", deleted, err)
	}
	if deleted, err := Delete(ctx, c, c, agent, ""); err != nil || deleted {
		t.Fatalf("DeleteSecret twice: deleted %v, err %v", deleted, err)
	}
}

func TestEnsureRepairsDamagedToken(t *testing.T) {
	ctx := context.Background()
	agent := testAgent("uid-1")
	damaged := provenSecret(t, agent, "", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE")
	damaged.Data[share.SecretTokenKey] = []byte("not-a-token")
	c := fake.NewClientBuilder().WithScheme(clientscheme.Scheme).WithObjects(damaged).Build()
	_, token, _, err := Ensure(ctx, c, c, testKeys(), agent, "")
	if err != nil || !share.ValidToken(token) {
		t.Fatalf("EnsureSecret: token %q, err %v", token, err)
	}
}

func TestEnsureLosesCreateRace(t *testing.T) {
	ctx := context.Background()
	agent := testAgent("uid-1")
	winner := provenSecret(t, agent, "", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE")
	c := fake.NewClientBuilder().WithScheme(clientscheme.Scheme).WithInterceptorFuncs(interceptor.Funcs{
		// Another writer creates the Secret between our read and our create.
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if err := c.Create(ctx, winner.DeepCopy()); err != nil {
				return err
			}
			return c.Create(ctx, obj, opts...)
		},
	}).Build()
	_, token, _, err := Ensure(ctx, c, c, testKeys(), agent, "")
	if err != nil || token != string(winner.Data[share.SecretTokenKey]) {
		t.Fatalf("EnsureSecret after a lost race: token %q, err %v; want the winner's token", token, err)
	}
	list := &corev1.SecretList{}
	if err := c.List(ctx, list); err != nil || len(list.Items) != 1 {
		t.Fatalf("secrets: %d, err %v", len(list.Items), err)
	}
}

func TestConsumeUse(t *testing.T) {
	ctx := context.Background()
	agent := testAgent("uid-1")
	one := int32(2)
	agent.Spec.Share = &v1alpha1.ShareSpec{Enabled: true, ShareLinkSpec: v1alpha1.ShareLinkSpec{MaxUses: &one}}
	c := fake.NewClientBuilder().WithScheme(clientscheme.Scheme).Build()
	secret, token, _, err := Ensure(ctx, c, c, testKeys(), agent, "")
	if err != nil {
		t.Fatal(err)
	}
	for want := int32(1); want <= 2; want++ {
		if n, err := ConsumeUse(ctx, c, c, testRing(), agent, "", token); err != nil || n != want {
			t.Fatalf("use %d: %d, %v", want, n, err)
		}
	}
	if _, err := ConsumeUse(ctx, c, c, testRing(), agent, "", token); !errors.Is(err, share.ErrUsedUp) {
		t.Fatalf("third use: %v, want share.ErrUsedUp", err)
	}
	if _, err := ConsumeUse(ctx, c, c, testRing(), agent, "", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE"); !errors.Is(err, share.ErrForeignSecret) {
		t.Fatalf("a use with another token: %v", err)
	}
	// Rotating starts the count again.
	current := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(secret), current); err != nil {
		t.Fatal(err)
	}
	_, rotated, err := Rotate(ctx, c, testKeys(), agent, "", current)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := ConsumeUse(ctx, c, c, testRing(), agent, "", rotated); err != nil || n != 1 {
		t.Fatalf("first use after rotation: %d, %v", n, err)
	}
}

func TestReturnUse(t *testing.T) {
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
				_, rotated, err := Rotate(context.Background(), c, testKeys(), testAgentWithLink(&one), "once", secret)
				if err != nil {
					t.Fatal(err)
				}
				// The new token takes its first use: the old token's
				// return must not give it back.
				if _, err := ConsumeUse(context.Background(), c, c, testRing(), testAgentWithLink(&one), "once", rotated); err != nil {
					t.Fatal(err)
				}
			},
			wantUses: 1,
		},
		{
			name: "a Secret another Agent owns is left alone",
			before: func(t *testing.T, c client.Client, secret *corev1.Secret) {
				secret.Annotations[share.AnnotationAgentUID] = "uid-2"
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
			c := fake.NewClientBuilder().WithScheme(clientscheme.Scheme).Build()
			secret, token, _, err := Ensure(ctx, c, c, testKeys(), agent, "once")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ConsumeUse(ctx, c, c, testRing(), agent, "once", token); err != nil {
				t.Fatal(err)
			}
			if tc.before != nil {
				if err := c.Get(ctx, client.ObjectKeyFromObject(secret), secret); err != nil {
					t.Fatal(err)
				}
				tc.before(t, c, secret)
			}
			if err := ReturnUse(ctx, c, c, testRing(), agent, "once", token); err != nil {
				t.Fatalf("ReturnUse: %v", err)
			}
			if tc.wantUses < 0 {
				return
			}
			if err := c.Get(ctx, client.ObjectKeyFromObject(secret), secret); err != nil {
				t.Fatal(err)
			}
			if got := share.Uses(secret); got != tc.wantUses {
				t.Fatalf("uses %d after the return, want %d", got, tc.wantUses)
			}
			if tc.wantUses == 0 {
				if _, err := ConsumeUse(ctx, c, c, testRing(), agent, "once", token); err != nil {
					t.Fatalf("taking the use given back: %v", err)
				}
				if _, err := ConsumeUse(ctx, c, c, testRing(), agent, "once", token); !errors.Is(err, share.ErrUsedUp) {
					t.Fatalf("a second use: %v, want share.ErrUsedUp", err)
				}
			}
		})
	}
}

// A use is given back only once: two returns of one use do not free two.
func TestReturnUseNeverGoesBelowZero(t *testing.T) {
	ctx := context.Background()
	one := int32(1)
	agent := testAgentWithLink(&one)
	c := fake.NewClientBuilder().WithScheme(clientscheme.Scheme).Build()
	secret, token, _, err := Ensure(ctx, c, c, testKeys(), agent, "once")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := ReturnUse(ctx, c, c, testRing(), agent, "once", token); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(secret), secret); err != nil {
		t.Fatal(err)
	}
	if got := share.Uses(secret); got != 0 {
		t.Fatalf("uses %d, want 0", got)
	}
}

func testAgentWithLink(maxUses *int32) *v1alpha1.Agent {
	agent := testAgent("uid-1")
	agent.Spec.Share = &v1alpha1.ShareSpec{Links: []v1alpha1.NamedShareLink{{Name: "once", ShareLinkSpec: v1alpha1.ShareLinkSpec{MaxUses: maxUses}}}}
	return agent
}

func TestConsumeUseOfNamedLinks(t *testing.T) {
	ctx := context.Background()
	agent := testAgent("uid-1")
	one := int32(1)
	agent.Spec.Share = &v1alpha1.ShareSpec{Links: []v1alpha1.NamedShareLink{{Name: "once", ShareLinkSpec: v1alpha1.ShareLinkSpec{MaxUses: &one}}, {Name: "many"}}}
	c := fake.NewClientBuilder().WithScheme(clientscheme.Scheme).Build()
	tokens := map[string]string{}
	for _, link := range []string{"once", "many"} {
		secret, token, _, err := Ensure(ctx, c, c, testKeys(), agent, link)
		if err != nil || secret.Name != "team-agent-share-"+link {
			t.Fatalf("Ensure(%s): %v, %v", link, secret, err)
		}
		tokens[link] = token
	}
	if n, err := ConsumeUse(ctx, c, c, testRing(), agent, "once", tokens["once"]); err != nil || n != 1 {
		t.Fatalf("first use of once: %d, %v", n, err)
	}
	if _, err := ConsumeUse(ctx, c, c, testRing(), agent, "once", tokens["once"]); !errors.Is(err, share.ErrUsedUp) {
		t.Fatalf("second use of once: %v, want share.ErrUsedUp", err)
	}
	// Another link's count is its own, and a token of one link is no use for another.
	for range 3 {
		if _, err := ConsumeUse(ctx, c, c, testRing(), agent, "many", tokens["many"]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ConsumeUse(ctx, c, c, testRing(), agent, "many", tokens["once"]); !errors.Is(err, share.ErrForeignSecret) {
		t.Fatalf("a use of many with once's token: %v", err)
	}
	if _, err := ConsumeUse(ctx, c, c, testRing(), agent, "gone", tokens["once"]); !errors.Is(err, share.ErrForeignSecret) {
		t.Fatalf("a use of an unknown link: %v", err)
	}
	if deleted, err := Delete(ctx, c, c, agent, "once"); err != nil || !deleted {
		t.Fatalf("Delete: %v %v", deleted, err)
	}
	if _, err := ConsumeUse(ctx, c, c, testRing(), agent, "many", tokens["many"]); err != nil {
		t.Fatalf("deleting once touched many: %v", err)
	}
}

// TestEnsureLinkSecretRejectsUnproven plants Secrets the way a namespace
// user who may write Secrets would, and checks that none of their tokens is
// ever handed back.
func TestEnsureRejectsUnproven(t *testing.T) {
	const planted = "PLANTEDPLANTEDPLANTEDPLANTEDPLANTEDPLANTEDA"
	if !share.ValidToken(planted) {
		t.Fatal("the planted token must have a token's form, or it tests nothing")
	}
	agent := testAgent("uid-1")
	other := testAgent("uid-2")
	other.Name = "other-agent"
	for _, tc := range []struct {
		name   string
		secret func(t *testing.T) map[string]string
	}{
		{name: "every claim of ownership but no proof", secret: func(t *testing.T) map[string]string { return nil }},
		{name: "a hand-edited token under a real proof", secret: func(t *testing.T) map[string]string {
			return provenSecret(t, agent, "", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE").Annotations
		}},
		{name: "the proof of the same token for another link", secret: func(t *testing.T) map[string]string {
			return provenSecret(t, agent, "qa", planted).Annotations
		}},
		{name: "the proof of the same token for another Agent", secret: func(t *testing.T) map[string]string {
			return provenSecret(t, other, "", planted).Annotations
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s := provenSecret(t, agent, "", planted)
			delete(s.Annotations, share.AnnotationTokenProof)
			for k, v := range tc.secret(t) {
				if k == share.AnnotationTokenProof {
					s.Annotations[k] = v
				}
			}
			s.Finalizers = []string{"example.com/keep"}
			c := fake.NewClientBuilder().WithScheme(clientscheme.Scheme).WithObjects(s).Build()
			if _, _, err := share.VerifySecret(testRing(), s, agent); err != share.ErrUnproven {
				t.Fatalf("share.VerifySecret of the planted Secret: %v, want share.ErrUnproven", err)
			}
			got, token, rejected, err := Ensure(ctx, c, c, testKeys(), agent, "")
			if err != nil || !rejected {
				t.Fatalf("Ensure: rejected %v, err %v", rejected, err)
			}
			if token == planted || !share.ValidToken(token) {
				t.Fatalf("Ensure handed back %q", token)
			}
			if held, _, err := share.VerifySecret(testRing(), got, agent); err != nil || held != token {
				t.Fatalf("the replacement is not proven: %v", err)
			}
			if len(got.Finalizers) != 0 {
				t.Errorf("the replacement kept the planted finalizers %v", got.Finalizers)
			}
		})
	}
}
