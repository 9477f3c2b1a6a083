package share

import (
	"bytes"
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
)

func testAgent(uid types.UID) *v1alpha1.Agent {
	return &v1alpha1.Agent{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "Agent"},
		ObjectMeta: metav1.ObjectMeta{Name: "team-agent", Namespace: "default", UID: uid},
	}
}

// testRing holds one fixed key; testKeys serve it.
func testRing() *KeyRing {
	return NewKeyRing(map[string][]byte{"k1": bytes.Repeat([]byte{1}, MinSigningKeyBytes)})
}

func testKeys() Keys { return StaticKeys{Ring: testRing()} }

// provenSecret is the Secret of the link holding token, proven by testRing.
func provenSecret(t *testing.T, agent *v1alpha1.Agent, link, token string) *corev1.Secret {
	t.Helper()
	s, err := NewLinkSecret(testRing(), agent, link, token)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testScheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestEnsureSecret(t *testing.T) {
	ctx := context.Background()
	agent := testAgent("uid-1")
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).Build()

	secret, token, rejected, err := EnsureLinkSecret(ctx, c, c, testKeys(), agent, "")
	if err != nil || rejected {
		t.Fatal(rejected, err)
	}
	if secret.Name != "team-agent-share" || len(token) != TokenLength || !OwnedBy(secret, agent.UID) {
		t.Fatalf("secret %s, token %q, owned %v", secret.Name, token, OwnedBy(secret, agent.UID))
	}
	if secret.Labels[LabelShareSecret] != "true" || secret.Labels[LabelAgent] != agent.Name {
		t.Errorf("labels = %v", secret.Labels)
	}

	_, again, _, err := EnsureLinkSecret(ctx, c, c, testKeys(), agent, "")
	if err != nil || again != token {
		t.Fatalf("second EnsureSecret: token %q, err %v; want the same token", again, err)
	}

	// Another Agent of the same name (deleted and recreated) must not get it.
	if _, _, _, err := EnsureLinkSecret(ctx, c, c, testKeys(), testAgent("uid-2"), ""); !errors.Is(err, ErrForeignSecret) {
		t.Fatalf("EnsureSecret for a recreated Agent: err %v, want ErrForeignSecret", err)
	}
	if deleted, err := DeleteLinkSecret(ctx, c, c, testAgent("uid-2"), ""); err != nil || deleted {
		t.Fatalf("DeleteSecret of a foreign Secret: deleted %v, err %v", deleted, err)
	}

	_, rotated, err := RotateSecret(ctx, c, testKeys(), agent, "", secret)
	if err != nil || rotated == token || !ValidToken(rotated) {
		t.Fatalf("RotateSecret: %q, %v", rotated, err)
	}
	// A rotation from a stale read loses instead of minting a second token.
	if _, _, err := RotateSecret(ctx, c, testKeys(), agent, "", secret); !apierrors.IsConflict(err) {
		t.Fatalf("stale RotateSecret: err %v, want a conflict", err)
	}

	if deleted, err := DeleteLinkSecret(ctx, c, c, agent, ""); err != nil || !deleted {
		t.Fatalf("DeleteSecret: deleted %v, err %v", deleted, err)
	}
	if deleted, err := DeleteLinkSecret(ctx, c, c, agent, ""); err != nil || deleted {
		t.Fatalf("DeleteSecret twice: deleted %v, err %v", deleted, err)
	}
}

func TestEnsureSecretRepairsDamagedToken(t *testing.T) {
	ctx := context.Background()
	agent := testAgent("uid-1")
	damaged := provenSecret(t, agent, "", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE")
	damaged.Data[SecretTokenKey] = []byte("not-a-token")
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(damaged).Build()
	_, token, _, err := EnsureLinkSecret(ctx, c, c, testKeys(), agent, "")
	if err != nil || !ValidToken(token) {
		t.Fatalf("EnsureSecret: token %q, err %v", token, err)
	}
}

func TestEnsureSecretLosesCreateRace(t *testing.T) {
	ctx := context.Background()
	agent := testAgent("uid-1")
	winner := provenSecret(t, agent, "", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE")
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).WithInterceptorFuncs(interceptor.Funcs{
		// Another writer creates the Secret between our read and our create.
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if err := c.Create(ctx, winner.DeepCopy()); err != nil {
				return err
			}
			return c.Create(ctx, obj, opts...)
		},
	}).Build()
	_, token, _, err := EnsureLinkSecret(ctx, c, c, testKeys(), agent, "")
	if err != nil || token != string(winner.Data[SecretTokenKey]) {
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
	agent.Spec.Share = &v1alpha1.ShareSpec{Enabled: true, MaxUses: &one}
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).Build()
	secret, token, _, err := EnsureLinkSecret(ctx, c, c, testKeys(), agent, "")
	if err != nil {
		t.Fatal(err)
	}
	for want := int32(1); want <= 2; want++ {
		if n, err := ConsumeLinkUse(ctx, c, c, testRing(), agent, "", token); err != nil || n != want {
			t.Fatalf("use %d: %d, %v", want, n, err)
		}
	}
	if _, err := ConsumeLinkUse(ctx, c, c, testRing(), agent, "", token); !errors.Is(err, ErrUsedUp) {
		t.Fatalf("third use: %v, want ErrUsedUp", err)
	}
	if _, err := ConsumeLinkUse(ctx, c, c, testRing(), agent, "", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE"); !errors.Is(err, ErrForeignSecret) {
		t.Fatalf("a use with another token: %v", err)
	}
	// Rotating starts the count again.
	current := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(secret), current); err != nil {
		t.Fatal(err)
	}
	_, rotated, err := RotateSecret(ctx, c, testKeys(), agent, "", current)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := ConsumeLinkUse(ctx, c, c, testRing(), agent, "", rotated); err != nil || n != 1 {
		t.Fatalf("first use after rotation: %d, %v", n, err)
	}
}
