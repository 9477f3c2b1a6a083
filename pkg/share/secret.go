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

// ErrForeignSecret means a Secret with the share Secret's name exists but is
// not controlled by the Agent. It is never adopted.
var ErrForeignSecret = errors.New("a Secret with the share Secret's name exists and does not belong to the Agent")

// SecretName returns the name of an Agent's share Secret.
func SecretName(agentName string) string {
	return agentName + SecretSuffix
}

// SecretSelector selects share Secrets.
func SecretSelector() map[string]string {
	return map[string]string{LabelShareSecret: "true"}
}

// NewSecret returns the share Secret of an Agent's default link holding the
// token.
func NewSecret(agent *v1alpha1.Agent, token string) *corev1.Secret {
	return NewLinkSecret(agent, "", token)
}

// NewLinkSecret returns the Secret of an Agent's link holding the token. The
// Secret of a named link carries the link's name in a label.
func NewLinkSecret(agent *v1alpha1.Agent, link, token string) *corev1.Secret {
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Name:      LinkSecretName(agent.Name, link),
			Namespace: agent.Namespace,
			Labels: map[string]string{
				LabelShareSecret: "true",
				LabelAgent:       agent.Name,
			},
			Annotations: map[string]string{AnnotationAgentUID: string(agent.UID)},
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
	return secret
}

// OwnedBy reports whether the Secret is the share Secret of this very Agent:
// controlled by it and made for its UID.
func OwnedBy(secret *corev1.Secret, agentUID types.UID) bool {
	if agentUID == "" || secret.Annotations[AnnotationAgentUID] != string(agentUID) {
		return false
	}
	ref := metav1.GetControllerOfNoCopy(secret)
	return ref != nil && ref.UID == agentUID && ref.Kind == "Agent" &&
		ref.APIVersion == v1alpha1.SchemeGroupVersion.String()
}

// TokenFrom returns the token held by a share Secret of the Agent with the
// given UID.
func TokenFrom(secret *corev1.Secret, agentUID types.UID) (string, error) {
	if !OwnedBy(secret, agentUID) {
		return "", ErrForeignSecret
	}
	token := string(secret.Data[SecretTokenKey])
	if !ValidToken(token) {
		return "", fmt.Errorf("share Secret %s/%s holds no valid token", secret.Namespace, secret.Name)
	}
	return token, nil
}

// EnsureSecret returns the Agent's share Secret and its token, creating the
// Secret with a new token when there is none. Enabling is idempotent: an
// existing Secret keeps its token, and when two writers race, the one that
// loses the create reads the winner's Secret. Reader should read through to
// the API server (not a cache) so that a lost race is seen at once. A Secret
// of the Agent with a damaged token gets a new one.
func EnsureSecret(ctx context.Context, r client.Reader, w client.Writer, agent *v1alpha1.Agent) (*corev1.Secret, string, error) {
	return EnsureLinkSecret(ctx, r, w, agent, "")
}

// EnsureLinkSecret is EnsureSecret for the link called link, "" being the
// default link.
func EnsureLinkSecret(ctx context.Context, r client.Reader, w client.Writer, agent *v1alpha1.Agent, link string) (*corev1.Secret, string, error) {
	key := types.NamespacedName{Namespace: agent.Namespace, Name: LinkSecretName(agent.Name, link)}
	secret := &corev1.Secret{}
	err := r.Get(ctx, key, secret)
	if apierrors.IsNotFound(err) {
		token, tokenErr := NewToken()
		if tokenErr != nil {
			return nil, "", tokenErr
		}
		secret = NewLinkSecret(agent, link, token)
		createErr := w.Create(ctx, secret)
		if createErr == nil {
			return secret, token, nil
		}
		if !apierrors.IsAlreadyExists(createErr) {
			return nil, "", fmt.Errorf("creating share Secret %s: %w", key, createErr)
		}
		secret = &corev1.Secret{}
		err = r.Get(ctx, key, secret)
	}
	if err != nil {
		return nil, "", fmt.Errorf("reading share Secret %s: %w", key, err)
	}
	if !OwnedBy(secret, agent.UID) {
		return nil, "", fmt.Errorf("share Secret %s: %w", key, ErrForeignSecret)
	}
	if token, err := TokenFrom(secret, agent.UID); err == nil {
		return secret, token, nil
	}
	return RotateSecret(ctx, w, secret)
}

// RotateSecret replaces the token in a share Secret. The update carries the
// Secret's resourceVersion, so of two concurrent rotations one fails with a
// conflict instead of both minting tokens.
func RotateSecret(ctx context.Context, w client.Writer, secret *corev1.Secret) (*corev1.Secret, string, error) {
	token, err := NewToken()
	if err != nil {
		return nil, "", err
	}
	updated := secret.DeepCopy()
	if updated.Data == nil {
		updated.Data = map[string][]byte{}
	}
	updated.Data[SecretTokenKey] = []byte(token)
	// A new token has opened nothing yet, and has no viewers.
	delete(updated.Annotations, AnnotationUses)
	ClearViewers(updated.Annotations)
	if err := w.Update(ctx, updated); err != nil {
		return nil, "", fmt.Errorf("rotating share Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	return updated, token, nil
}

// DeleteSecret deletes the Agent's share Secret if it belongs to the Agent. A
// foreign Secret of the same name is left alone. It reports whether a Secret
// was deleted.
func DeleteSecret(ctx context.Context, r client.Reader, w client.Writer, agent *v1alpha1.Agent) (bool, error) {
	return DeleteLinkSecret(ctx, r, w, agent, "")
}

// DeleteLinkSecret is DeleteSecret for the link called link, "" being the
// default link.
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
