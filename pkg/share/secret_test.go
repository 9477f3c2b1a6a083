package share

import (
	"bytes"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

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
