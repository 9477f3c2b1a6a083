package secrets

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

// maxEnsureAttempts bounds how often Ensure starts over when the Secret
// changes under it before it answers with a conflict.
const maxEnsureAttempts = 5

// Ensure returns the Secret of the Agent's link ("" being the
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
func Ensure(ctx context.Context, r client.Reader, w client.Writer, keys share.Keys, agent *v1alpha1.Agent, link string) (secret *corev1.Secret, token string, rejected bool, err error) {
	key := types.NamespacedName{Namespace: agent.Namespace, Name: share.LinkSecretName(agent.Name, link)}
	for range maxEnsureAttempts {
		existing := &corev1.Secret{}
		err := r.Get(ctx, key, existing)
		if apierrors.IsNotFound(err) {
			secret, token, err := Create(ctx, w, keys, agent, link)
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			return secret, token, rejected, err
		}
		if err != nil {
			return nil, "", rejected, fmt.Errorf("reading share Secret %s: %w", key, err)
		}
		token, _, err := share.VerifySecretFresh(ctx, keys, existing, agent)
		if err == nil {
			return existing, token, rejected, nil
		}
		if !errors.Is(err, share.ErrUnproven) {
			return nil, "", rejected, fmt.Errorf("share Secret %s: %w", key, err)
		}
		rejected = true
		secret, token, err = Replace(ctx, w, keys, agent, link, existing)
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			continue
		}
		return secret, token, rejected, err
	}
	return nil, "", rejected, apierrors.NewConflict(corev1.Resource("secrets"), key.Name,
		errors.New("the share Secret kept changing while a token was being minted for it"))
}

// Create mints a token for the Agent's link and creates its Secret. An
// AlreadyExists error is returned as it is, for the caller to decide on the
// Secret that is there.
func Create(ctx context.Context, w client.Writer, keys share.Keys, agent *v1alpha1.Agent, link string) (*corev1.Secret, string, error) {
	ring, err := share.SigningRing(ctx, keys)
	if err != nil {
		return nil, "", err
	}
	secret, token, err := share.MintSecret(ring, agent, link)
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

// Replace overwrites an unproven Secret of the Agent's link with a
// newly minted one: labels, annotations, owner references, finalizers and
// data are all the system's again. The update carries the resourceVersion
// read, so a Secret changed meanwhile makes it fail with a conflict, to be
// looked at again.
func Replace(ctx context.Context, w client.Writer, keys share.Keys, agent *v1alpha1.Agent, link string, existing *corev1.Secret) (*corev1.Secret, string, error) {
	ring, err := share.SigningRing(ctx, keys)
	if err != nil {
		return nil, "", err
	}
	secret, token, err := share.MintSecret(ring, agent, link)
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

// Rotate replaces the token in a proven share Secret of the Agent's
// link with a newly minted one. The update carries the Secret's
// resourceVersion, so of two concurrent rotations one fails with a conflict
// instead of both minting tokens.
func Rotate(ctx context.Context, w client.Writer, keys share.Keys, agent *v1alpha1.Agent, link string, secret *corev1.Secret) (*corev1.Secret, string, error) {
	ring, err := share.SigningRing(ctx, keys)
	if err != nil {
		return nil, "", err
	}
	token, err := share.NewToken()
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
	updated.Data[share.SecretTokenKey] = []byte(token)
	updated.Annotations[share.AnnotationTokenProof] = proof
	// A new token has opened nothing yet, and has no viewers.
	delete(updated.Annotations, share.AnnotationUses)
	share.ClearViewers(updated.Annotations)
	if err := w.Update(ctx, updated); err != nil {
		return nil, "", fmt.Errorf("rotating share Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	return updated, token, nil
}

// Delete deletes the Secret of the Agent's link ("" being the
// default link) if it claims to belong to the Agent, proven or not: either
// way it must not outlive the link. A foreign Secret of the same name is left
// alone. It reports whether a Secret was deleted.
func Delete(ctx context.Context, r client.Reader, w client.Writer, agent *v1alpha1.Agent, link string) (bool, error) {
	key := types.NamespacedName{Namespace: agent.Namespace, Name: share.LinkSecretName(agent.Name, link)}
	secret := &corev1.Secret{}
	if err := r.Get(ctx, key, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("reading share Secret %s: %w", key, err)
	}
	if !share.OwnedBy(secret, agent.UID) {
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
