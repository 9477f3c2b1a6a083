package share

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/types"
)

// AnnotationTokenProof holds, on a share Secret, the proof that this system
// minted the Secret's token: "<key id>:<HMAC-SHA256>" (base64url) of the
// namespace, the Agent's UID, the link's name and the token, under a signing
// key that only the system's ServiceAccounts can read. Everything else on a
// share Secret (owner references, labels, annotations) can be written by
// anyone who may write Secrets in the namespace; the proof cannot.
const AnnotationTokenProof = "kubeopencode.io/token-proof"

// MinSigningKeyBytes is the shortest signing key a KeyRing accepts. Shorter
// entries of the key Secret are ignored, so that a truncated key signs and
// proves nothing.
const MinSigningKeyBytes = 32

// proofContext separates these MACs from any other use of the keys.
const proofContext = "kubeopencode.io/share-token-proof/v1"

// ErrNoSigningKey means the system's signing key is not known: no link can
// be minted or proven until it is.
var ErrNoSigningKey = errors.New("no share signing key is known")

// KeyRing holds the system's signing keys by id. The key with the greatest
// id signs; every key proves. Adding a key with a greater id and removing the
// old one once every share Secret is signed again rotates the keys. A nil or
// empty KeyRing proves nothing.
type KeyRing struct {
	ids  []string
	keys map[string][]byte
}

// NewKeyRing returns the keys among data long enough to use.
func NewKeyRing(data map[string][]byte) *KeyRing {
	k := &KeyRing{keys: map[string][]byte{}}
	for id, key := range data {
		if len(key) < MinSigningKeyBytes || id == "" || strings.Contains(id, ":") {
			continue
		}
		k.keys[id] = slices.Clone(key)
		k.ids = append(k.ids, id)
	}
	slices.Sort(k.ids)
	return k
}

// Empty reports whether the ring has no key.
func (k *KeyRing) Empty() bool { return k == nil || len(k.ids) == 0 }

// SignerID returns the id of the key that signs, or "".
func (k *KeyRing) SignerID() string {
	if k.Empty() {
		return ""
	}
	return k.ids[len(k.ids)-1]
}

// IDs returns the ids of the keys, in order.
func (k *KeyRing) IDs() []string {
	if k == nil {
		return nil
	}
	return slices.Clone(k.ids)
}

// Prove returns the proof of a token minted for the link of the Agent with
// the given UID in namespace.
func (k *KeyRing) Prove(namespace string, agentUID types.UID, link, token string) (string, error) {
	id := k.SignerID()
	if id == "" {
		return "", ErrNoSigningKey
	}
	return id + ":" + base64.RawURLEncoding.EncodeToString(mac(k.keys[id], namespace, agentUID, link, token)), nil
}

// Verify reports whether proof proves the token for the link of the Agent,
// and returns the id of the key that signed it.
func (k *KeyRing) Verify(namespace string, agentUID types.UID, link, token, proof string) (string, bool) {
	if k.Empty() || agentUID == "" {
		return "", false
	}
	id, sum, ok := strings.Cut(proof, ":")
	if !ok {
		return "", false
	}
	key, known := k.keys[id]
	if !known {
		return "", false
	}
	got, err := base64.RawURLEncoding.Strict().DecodeString(sum)
	if err != nil {
		return "", false
	}
	return id, hmac.Equal(got, mac(key, namespace, agentUID, link, token))
}

// mac is the HMAC-SHA256 of a token's proof.
func mac(key []byte, namespace string, agentUID types.UID, link, token string) []byte {
	return fieldsMAC(key, proofContext, namespace, string(agentUID), link, token)
}

// fieldsMAC is the HMAC-SHA256 of the fields, each preceded by its length,
// so that no two different sets of fields give the same message.
func fieldsMAC(key []byte, fields ...string) []byte {
	h := hmac.New(sha256.New, key)
	for _, field := range fields {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(field)))
		h.Write(n[:])
		h.Write([]byte(field))
	}
	return h.Sum(nil)
}

// Sum returns the HMAC-SHA256, under the key id, of a context naming what
// the MAC is for followed by the fields, each preceded by its length; ok is
// false when the ring holds no key id. It serves the system's other uses
// of a ring of keys (such as a ring of its own that the share listener's
// replicas authenticate each other with); the context keeps its MACs apart
// from token proofs and from each other.
func (k *KeyRing) Sum(id, context string, fields ...string) (sum []byte, ok bool) {
	if k.Empty() || context == "" || context == proofContext {
		return nil, false
	}
	key, known := k.keys[id]
	if !known {
		return nil, false
	}
	return fieldsMAC(key, append([]string{context}, fields...)...), true
}

// Keys gives the system's signing keys to the parts that mint and check
// tokens.
type Keys interface {
	// KeyRing returns the keys as last seen. It may lag behind the cluster
	// by the time a watch event takes.
	KeyRing() *KeyRing
	// Refresh reads the keys from the API server, making the first key when
	// there is none, and returns them. A part that is about to mint with an
	// empty ring, or to reject a Secret whose proof names a key it does not
	// know, refreshes first.
	Refresh(ctx context.Context) (*KeyRing, error)
}

// StaticKeys is a fixed KeyRing, for tests and tools.
type StaticKeys struct{ Ring *KeyRing }

// KeyRing returns the ring.
func (s StaticKeys) KeyRing() *KeyRing { return s.Ring }

// OnChange does nothing: the ring never changes.
func (StaticKeys) OnChange(func()) {}

// Refresh returns the ring, or ErrNoSigningKey when it is empty.
func (s StaticKeys) Refresh(context.Context) (*KeyRing, error) {
	if s.Ring.Empty() {
		return nil, ErrNoSigningKey
	}
	return s.Ring, nil
}

// SameKey reports whether both rings hold the same key under id.
func (k *KeyRing) SameKey(other *KeyRing, id string) bool {
	if k.Empty() || other.Empty() {
		return false
	}
	a, okA := k.keys[id]
	b, okB := other.keys[id]
	return okA && okB && hmac.Equal(a, b)
}
