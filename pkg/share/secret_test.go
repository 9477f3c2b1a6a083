package share

import (
	"bytes"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
)

// testRing holds one fixed key.
func testRing() *KeyRing {
	return NewKeyRing(map[string][]byte{"k1": bytes.Repeat([]byte{1}, MinSigningKeyBytes)})
}

// provenSecret is the Secret of the link holding token, proven by testRing.
func provenSecret(t *testing.T, agent *v1alpha1.Agent, link, token string) *corev1.Secret {
	t.Helper()
	s, err := NewLinkSecret(testRing(), agent, link, token)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
