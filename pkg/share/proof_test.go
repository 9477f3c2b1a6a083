package share

import (
	"bytes"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
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

func typesUID(s string) types.UID { return types.UID(s) }
