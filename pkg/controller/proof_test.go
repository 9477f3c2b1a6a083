package controller

import (
	"bytes"
	"context"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	clientscheme "github.com/kubeopencode/share/pkg/apis/scheme"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/sharetest"
)

func TestReconcileShareSecretProof(t *testing.T) {
	const planted = "PLANTEDplantedPLANTEDplantedPLANTEDplantedA"
	if !share.ValidToken(planted) {
		t.Fatal("the planted token must have a token's form, or it tests nothing")
	}
	oldKey := bytes.Repeat([]byte{1}, share.MinSigningKeyBytes)
	newKey := bytes.Repeat([]byte{2}, share.MinSigningKeyBytes)
	before := share.NewKeyRing(map[string][]byte{"a": oldKey})
	during := share.NewKeyRing(map[string][]byte{"a": oldKey, "b": newKey})
	agent := testAgent()
	agent.Generation = 1
	agent.Spec.Share = &v1alpha1.ShareSpec{Enabled: true}
	proven, err := share.NewLinkSecret(before, agent, "", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE")
	if err != nil {
		t.Fatal(err)
	}
	unproven := sharetest.Secret(agent, "", planted)
	delete(unproven.Annotations, share.AnnotationTokenProof)
	edited := proven.DeepCopy()
	edited.Data[share.SecretTokenKey] = []byte(planted)

	for _, tc := range []struct {
		name          string
		secret        *corev1.Secret
		keys          *share.KeyRing
		wantRejected  bool
		wantSameToken bool
		wantProofKey  string
	}{
		{name: "a planted Secret claiming the Agent", secret: unproven, keys: before, wantRejected: true, wantProofKey: "a"},
		{name: "a proven Secret whose token was edited", secret: edited, keys: before, wantRejected: true, wantProofKey: "a"},
		{name: "a proven Secret", secret: proven, keys: before, wantSameToken: true, wantProofKey: "a"},
		{name: "a Secret proven by a key no longer the signer", secret: proven, keys: during, wantSameToken: true, wantProofKey: "b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scheme := clientscheme.Scheme
			c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(agent.DeepCopy(), tc.secret.DeepCopy()).
				WithStatusSubresource(&v1alpha1.Agent{}, &appsv1.Deployment{}).Build()
			rec := events.NewFakeRecorder(16)
			r := NewAgentReconciler(c, c, rec, Config{Keys: share.StaticKeys{Ring: tc.keys}})
			if _, err := r.Reconcile(context.Background(), reconcile.Request{NamespacedName: client.ObjectKeyFromObject(agent)}); err != nil {
				t.Fatal(err)
			}
			got := &corev1.Secret{}
			if err := c.Get(context.Background(), client.ObjectKeyFromObject(tc.secret), got); err != nil {
				t.Fatal(err)
			}
			token, keyID, err := share.VerifySecret(tc.keys, got, agent)
			if err != nil {
				t.Fatalf("the Secret after the reconcile is not proven: %v", err)
			}
			if token == planted {
				t.Fatal("the planted token was kept")
			}
			if same := token == string(tc.secret.Data[share.SecretTokenKey]); same != tc.wantSameToken {
				t.Errorf("token kept: %v, want %v", same, tc.wantSameToken)
			}
			if keyID != tc.wantProofKey {
				t.Errorf("proven by key %q, want %q", keyID, tc.wantProofKey)
			}
			var rejected []string
			for len(rec.Events) > 0 {
				if e := <-rec.Events; strings.Contains(e, EventShareSecretRejected) {
					rejected = append(rejected, e)
					if !strings.HasPrefix(e, corev1.EventTypeWarning) || strings.Contains(e, planted) {
						t.Errorf("Event %q: want a Warning that does not echo the token", e)
					}
				}
			}
			if (len(rejected) == 1) != tc.wantRejected {
				t.Errorf("ShareSecretRejected Events %v, want rejected=%v", rejected, tc.wantRejected)
			}
		})
	}
}
