package share

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

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

// maxEnsureAttempts bounds how often EnsureLinkSecret starts over when the
// Secret changes under it before it answers with a conflict.
const maxEnsureAttempts = 5

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

// signingRing returns keys that can sign, reading them from the API server
// (and so making the first key) when none is known yet.
func signingRing(ctx context.Context, keys Keys) (*KeyRing, error) {
	if ring := keys.KeyRing(); !ring.Empty() {
		return ring, nil
	}
	ring, err := keys.Refresh(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the share signing keys: %w", err)
	}
	return ring, nil
}

// EnsureLinkSecret returns the Secret of the Agent's link ("" being the
// default link) and its token, minting them when there is none. Enabling is
// idempotent: a Secret whose token this system minted keeps it, and when two
// writers race, the one that loses the create takes the winner's Secret once
// it is proven. A Secret that claims to be the link's but is unproven is
// replaced, in one update guarded by its resourceVersion, by a Secret with a
// newly minted token; rejected reports that this happened. Reader should read
// through to the API server, not a cache.
//
// The token returned is always one this system minted: either written by
// this call or carrying a valid proof. Nothing a namespace user planted is
// ever handed back.
func EnsureLinkSecret(ctx context.Context, r client.Reader, w client.Writer, keys Keys, agent *v1alpha1.Agent, link string) (secret *corev1.Secret, token string, rejected bool, err error) {
	key := types.NamespacedName{Namespace: agent.Namespace, Name: LinkSecretName(agent.Name, link)}
	for range maxEnsureAttempts {
		existing := &corev1.Secret{}
		err := r.Get(ctx, key, existing)
		if apierrors.IsNotFound(err) {
			secret, token, err := CreateSecret(ctx, w, keys, agent, link)
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			return secret, token, rejected, err
		}
		if err != nil {
			return nil, "", rejected, fmt.Errorf("reading share Secret %s: %w", key, err)
		}
		token, _, err := VerifySecretFresh(ctx, keys, existing, agent)
		if err == nil {
			return existing, token, rejected, nil
		}
		if !errors.Is(err, ErrUnproven) {
			return nil, "", rejected, fmt.Errorf("share Secret %s: %w", key, err)
		}
		rejected = true
		secret, token, err = ReplaceSecret(ctx, w, keys, agent, link, existing)
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			continue
		}
		return secret, token, rejected, err
	}
	return nil, "", rejected, apierrors.NewConflict(corev1.Resource("secrets"), key.Name,
		errors.New("the share Secret kept changing while a token was being minted for it"))
}

// CreateSecret mints a token for the Agent's link and creates its Secret. An
// AlreadyExists error is returned as it is, for the caller to decide on the
// Secret that is there.
func CreateSecret(ctx context.Context, w client.Writer, keys Keys, agent *v1alpha1.Agent, link string) (*corev1.Secret, string, error) {
	ring, err := signingRing(ctx, keys)
	if err != nil {
		return nil, "", err
	}
	secret, token, err := MintSecret(ring, agent, link)
	if err != nil {
		return nil, "", err
	}
	if err := w.Create(ctx, secret); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return nil, "", err
		}
		return nil, "", fmt.Errorf("creating share Secret %s: %w", client.ObjectKeyFromObject(secret), err)
	}
	return secret, token, nil
}

// ReplaceSecret overwrites an unproven Secret of the Agent's link with a
// newly minted one: labels, annotations, owner references, finalizers and
// data are all the system's again. The update carries the resourceVersion
// read, so a Secret changed meanwhile makes it fail with a conflict, to be
// looked at again.
func ReplaceSecret(ctx context.Context, w client.Writer, keys Keys, agent *v1alpha1.Agent, link string, existing *corev1.Secret) (*corev1.Secret, string, error) {
	ring, err := signingRing(ctx, keys)
	if err != nil {
		return nil, "", err
	}
	secret, token, err := MintSecret(ring, agent, link)
	if err != nil {
		return nil, "", err
	}
	secret.ResourceVersion = existing.ResourceVersion
	secret.UID = existing.UID
	if err := w.Update(ctx, secret); err != nil {
		return nil, "", fmt.Errorf("replacing the unproven share Secret %s: %w", client.ObjectKeyFromObject(secret), err)
	}
	return secret, token, nil
}

// RotateSecret replaces the token in a proven share Secret of the Agent's
// link with a newly minted one. The update carries the Secret's
// resourceVersion, so of two concurrent rotations one fails with a conflict
// instead of both minting tokens.
func RotateSecret(ctx context.Context, w client.Writer, keys Keys, agent *v1alpha1.Agent, link string, secret *corev1.Secret) (*corev1.Secret, string, error) {
	ring, err := signingRing(ctx, keys)
	if err != nil {
		return nil, "", err
	}
	token, err := NewToken()
	if err != nil {
		return nil, "", err
	}
	proof, err := ring.Prove(agent.Namespace, agent.UID, link, token)
	if err != nil {
		return nil, "", err
	}
	updated := secret.DeepCopy()
	if updated.Data == nil {
		updated.Data = map[string][]byte{}
	}
	if updated.Annotations == nil {
		updated.Annotations = map[string]string{}
	}
	updated.Data[SecretTokenKey] = []byte(token)
	updated.Annotations[AnnotationTokenProof] = proof
	// A new token has opened nothing yet, and has no viewers.
	delete(updated.Annotations, AnnotationUses)
	ClearViewers(updated.Annotations)
	if err := w.Update(ctx, updated); err != nil {
		return nil, "", fmt.Errorf("rotating share Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	return updated, token, nil
}

// DeleteLinkSecret deletes the Secret of the Agent's link ("" being the
// default link) if it claims to belong to the Agent, proven or not: either
// way it must not outlive the link. A foreign Secret of the same name is left
// alone. It reports whether a Secret was deleted.
func DeleteLinkSecret(ctx context.Context, r client.Reader, w client.Writer, agent *v1alpha1.Agent, link string) (bool, error) {
	key := types.NamespacedName{Namespace: agent.Namespace, Name: LinkSecretName(agent.Name, link)}
	secret := &corev1.Secret{}
	if err := r.Get(ctx, key, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("reading share Secret %s: %w", key, err)
	}
	if !OwnedBy(secret, agent.UID) {
		return false, nil
	}
	uid := secret.UID
	err := w.Delete(ctx, secret, client.Preconditions{UID: &uid})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("deleting share Secret %s: %w", key, err)
	}
	return true, nil
}
