package share

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
)

const (
	// SecretSuffix ends the name of an Agent's share Secret: {agent}-share.
	SecretSuffix = "-share"
	// SecretTokenKey is the key of the token in the Secret's data.
	SecretTokenKey = "token"
	// LabelShareSecret marks share Secrets, so that caches can select only them.
	LabelShareSecret = "kubeopencode.io/share-secret"
	// LabelAgent names the Agent a share Secret or pod belongs to.
	LabelAgent = "kubeopencode.io/agent"
	// AnnotationAgentUID records the UID of the Agent a share Secret was made
	// for, so that the Secret of a deleted Agent never opens a new one of the
	// same name.
	AnnotationAgentUID = "kubeopencode.io/agent-uid"
)

// ErrForeignSecret means a Secret with the share Secret's name exists but is
// not controlled by the Agent. It is never adopted.
var ErrForeignSecret = errors.New("a Secret with the share Secret's name exists and does not belong to the Agent")

// ErrUnproven means a Secret claims to be an Agent's share Secret but its
// token carries no valid proof that this system minted it (see
// AnnotationTokenProof): someone who may write Secrets planted or edited it.
// It is never honoured; the system replaces it with a token it mints.
var ErrUnproven = errors.New("the share Secret's token carries no proof that this system minted it")

// SecretName returns the name of an Agent's share Secret.
func SecretName(agentName string) string {
	return agentName + SecretSuffix
}

// SecretSelector selects share Secrets.
func SecretSelector() map[string]string {
	return map[string]string{LabelShareSecret: "true"}
}

// MintSecret returns a new Secret for the Agent's link holding a new token and
// the proof that this system minted it. The Secret of a named link carries
// the link's name in a label.
func MintSecret(ring *KeyRing, agent *v1alpha1.Agent, link string) (*corev1.Secret, string, error) {
	token, err := NewToken()
	if err != nil {
		return nil, "", err
	}
	secret, err := NewLinkSecret(ring, agent, link, token)
	return secret, token, err
}

// NewLinkSecret returns the Secret of the Agent's link holding token and the
// proof, under ring's signing key, that this system minted it. Only the parts
// that mint tokens (MintSecret) and tests call it.
func NewLinkSecret(ring *KeyRing, agent *v1alpha1.Agent, link, token string) (*corev1.Secret, error) {
	proof, err := ring.Prove(agent.Namespace, agent.UID, link, token)
	if err != nil {
		return nil, err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      LinkSecretName(agent.Name, link),
			Namespace: agent.Namespace,
			Labels: map[string]string{
				LabelShareSecret: "true",
				LabelAgent:       agent.Name,
			},
			Annotations: map[string]string{
				AnnotationAgentUID:   string(agent.UID),
				AnnotationTokenProof: proof,
			},
			OwnerReferences: []metav1.OwnerReference{
				*metav1.NewControllerRef(agent, v1alpha1.SchemeGroupVersion.WithKind("Agent")),
			},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{SecretTokenKey: []byte(token)},
	}
	if link != "" {
		secret.Labels[LabelShareLink] = link
	}
	return secret, nil
}

// OwnedBy reports whether the Secret claims to be a share Secret of this very
// Agent: controlled by it and made for its UID. A claim is not trust: anyone
// who may write Secrets can make it. Only VerifySecret decides whether a
// token is honoured; OwnedBy decides whether a Secret is the Agent's to
// delete or replace rather than someone else's to leave alone.
func OwnedBy(secret *corev1.Secret, agentUID types.UID) bool {
	if agentUID == "" || secret.Annotations[AnnotationAgentUID] != string(agentUID) {
		return false
	}
	ref := metav1.GetControllerOfNoCopy(secret)
	return ref != nil && ref.UID == agentUID && ref.Kind == "Agent" &&
		ref.APIVersion == v1alpha1.SchemeGroupVersion.String()
}

// VerifySecret returns the token of the Agent's share Secret and the id of
// the key that proves it. It returns ErrForeignSecret for a Secret that does
// not claim to be the Agent's, and ErrUnproven for one that claims to be but
// whose token this system did not mint for that Agent and link.
func VerifySecret(ring *KeyRing, secret *corev1.Secret, agent *v1alpha1.Agent) (string, string, error) {
	if !OwnedBy(secret, agent.UID) {
		return "", "", ErrForeignSecret
	}
	link := secret.Labels[LabelShareLink]
	token := string(secret.Data[SecretTokenKey])
	if secret.Namespace != agent.Namespace || secret.Name != LinkSecretName(agent.Name, link) || !ValidToken(token) {
		return "", "", ErrUnproven
	}
	keyID, ok := ring.Verify(agent.Namespace, agent.UID, link, token, secret.Annotations[AnnotationTokenProof])
	if !ok {
		return "", "", ErrUnproven
	}
	return token, keyID, nil
}

// SigningRing returns keys that can sign, reading them from the API server
// (and so making the first key) when none is known yet.
func SigningRing(ctx context.Context, keys Keys) (*KeyRing, error) {
	if ring := keys.KeyRing(); !ring.Empty() {
		return ring, nil
	}
	ring, err := keys.Refresh(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the share signing keys: %w", err)
	}
	return ring, nil
}

// VerifySecretFresh is VerifySecret that reads the keys from the API server
// before it calls a Secret unproven, so that a key added moments ago on
// another replica does not get a good Secret rejected.
func VerifySecretFresh(ctx context.Context, keys Keys, secret *corev1.Secret, agent *v1alpha1.Agent) (string, string, error) {
	token, keyID, err := VerifySecret(keys.KeyRing(), secret, agent)
	if !errors.Is(err, ErrUnproven) {
		return token, keyID, err
	}
	ring, refreshErr := keys.Refresh(ctx)
	if refreshErr != nil {
		return "", "", fmt.Errorf("reading the share signing keys: %w", refreshErr)
	}
	return VerifySecret(ring, secret, agent)
}
