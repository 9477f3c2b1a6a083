// Package sharetest holds helpers for tests of the parts that mint and
// prove share tokens.
package sharetest

import (
	"bytes"

	corev1 "k8s.io/api/core/v1"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

// Ring returns a fixed KeyRing with one key, "test".
func Ring() *share.KeyRing {
	return share.NewKeyRing(map[string][]byte{"test": bytes.Repeat([]byte{7}, share.MinSigningKeyBytes)})
}

// Keys returns share.Keys holding Ring.
func Keys() share.StaticKeys { return share.StaticKeys{Ring: Ring()} }

// Secret returns the proven share Secret of the Agent's link holding token.
// It panics on error: the ring always signs.
func Secret(agent *v1alpha1.Agent, link, token string) *corev1.Secret {
	secret, err := share.NewLinkSecret(Ring(), agent, link, token)
	if err != nil {
		panic(err)
	}
	return secret
}
