package share

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func TestKeyRingProves(t *testing.T) {
	const token = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE"
	ring := testRing()
	proof, err := ring.Prove("default", "uid-1", "qa", token)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(proof, "k1:") {
		t.Fatalf("proof %q does not name its key", proof)
	}
	other := NewKeyRing(map[string][]byte{"k1": bytes.Repeat([]byte{2}, MinSigningKeyBytes)})
	for _, tc := range []struct {
		name                        string
		ring                        *KeyRing
		namespace, uid, link, token string
		proof                       string
		want                        bool
	}{
		{name: "the minted token", ring: ring, namespace: "default", uid: "uid-1", link: "qa", token: token, proof: proof, want: true},
		{name: "another namespace", ring: ring, namespace: "other", uid: "uid-1", link: "qa", token: token, proof: proof},
		{name: "another Agent", ring: ring, namespace: "default", uid: "uid-2", link: "qa", token: token, proof: proof},
		{name: "another link", ring: ring, namespace: "default", uid: "uid-1", link: "", token: token, proof: proof},
		{name: "another token", ring: ring, namespace: "default", uid: "uid-1", link: "qa", token: "B" + token[1:], proof: proof},
		{name: "fields shifted between namespace and link", ring: ring, namespace: "defaultq", uid: "uid-1", link: "a", token: token, proof: proof},
		{name: "a key of the same id but other bytes", ring: other, namespace: "default", uid: "uid-1", link: "qa", token: token, proof: proof},
		{name: "no keys", ring: NewKeyRing(nil), namespace: "default", uid: "uid-1", link: "qa", token: token, proof: proof},
		{name: "a nil ring", ring: nil, namespace: "default", uid: "uid-1", link: "qa", token: token, proof: proof},
		{name: "an unknown key id", ring: ring, namespace: "default", uid: "uid-1", link: "qa", token: token, proof: "k9" + proof[2:]},
		{name: "no key id", ring: ring, namespace: "default", uid: "uid-1", link: "qa", token: token, proof: proof[3:]},
		{name: "a truncated MAC", ring: ring, namespace: "default", uid: "uid-1", link: "qa", token: token, proof: proof[:len(proof)-2]},
		{name: "an empty proof", ring: ring, namespace: "default", uid: "uid-1", link: "qa", token: token},
		{name: "no Agent UID", ring: ring, namespace: "default", uid: "", link: "qa", token: token, proof: proof},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, got := tc.ring.Verify(tc.namespace, typesUID(tc.uid), tc.link, tc.token, tc.proof); got != tc.want {
				t.Errorf("Verify = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestKeyRingRotation(t *testing.T) {
	const token = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE"
	oldKey, newKey := bytes.Repeat([]byte{1}, MinSigningKeyBytes), bytes.Repeat([]byte{3}, MinSigningKeyBytes)
	before := NewKeyRing(map[string][]byte{"2026-01": oldKey})
	during := NewKeyRing(map[string][]byte{"2026-01": oldKey, "2026-12": newKey, "short": []byte("too short to sign")})
	after := NewKeyRing(map[string][]byte{"2026-12": newKey})
	if got := during.SignerID(); got != "2026-12" {
		t.Fatalf("signer during the overlap = %q, want the newest key", got)
	}
	if ids := during.IDs(); len(ids) != 2 {
		t.Fatalf("a key shorter than %d bytes was kept: %v", MinSigningKeyBytes, ids)
	}
	oldProof, _ := before.Prove("ns", "uid", "", token)
	newProof, _ := during.Prove("ns", "uid", "", token)
	for _, tc := range []struct {
		name  string
		ring  *KeyRing
		proof string
		want  bool
	}{
		{"old proof, old keys", before, oldProof, true},
		{"old proof during the overlap", during, oldProof, true},
		{"new proof during the overlap", during, newProof, true},
		{"old proof once the old key is gone", after, oldProof, false},
		{"new proof once the old key is gone", after, newProof, true},
	} {
		if _, got := tc.ring.Verify("ns", "uid", "", token, tc.proof); got != tc.want {
			t.Errorf("%s: Verify = %v, want %v", tc.name, got, tc.want)
		}
	}
	if _, err := NewKeyRing(nil).Prove("ns", "uid", "", token); err == nil {
		t.Error("an empty ring signed")
	}
}

// TestEnsureLinkSecretRejectsUnproven plants Secrets the way a namespace
// user who may write Secrets would, and checks that none of their tokens is
// ever handed back.
func TestEnsureLinkSecretRejectsUnproven(t *testing.T) {
	const planted = "PLANTEDPLANTEDPLANTEDPLANTEDPLANTEDPLANTEDA"
	if !ValidToken(planted) {
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
			delete(s.Annotations, AnnotationTokenProof)
			for k, v := range tc.secret(t) {
				if k == AnnotationTokenProof {
					s.Annotations[k] = v
				}
			}
			s.Finalizers = []string{"example.com/keep"}
			c := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(s).Build()
			if _, _, err := VerifySecret(testRing(), s, agent); err != ErrUnproven {
				t.Fatalf("VerifySecret of the planted Secret: %v, want ErrUnproven", err)
			}
			got, token, rejected, err := EnsureLinkSecret(ctx, c, c, testKeys(), agent, "")
			if err != nil || !rejected {
				t.Fatalf("EnsureLinkSecret: rejected %v, err %v", rejected, err)
			}
			if token == planted || !ValidToken(token) {
				t.Fatalf("EnsureLinkSecret handed back %q", token)
			}
			if held, _, err := VerifySecret(testRing(), got, agent); err != nil || held != token {
				t.Fatalf("the replacement is not proven: %v", err)
			}
			if len(got.Finalizers) != 0 {
				t.Errorf("the replacement kept the planted finalizers %v", got.Finalizers)
			}
		})
	}
}

func typesUID(s string) types.UID { return types.UID(s) }
