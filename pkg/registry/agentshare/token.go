package agentshare

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	kubeopencodev1alpha1 "github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/secrets"
)

// maxRotateAttempts bounds how often a rotation re-reads a Secret that others
// keep changing before it answers 409 Conflict.
const maxRotateAttempts = 5

// ensureToken makes sure the Agent's share Secret holds a token this system
// minted and returns it: a token this call wrote, or one carrying a valid
// proof. With rotate, it replaces a token that existed before the call. A
// Secret that claims to be the link's without proof is replaced and reported.
func (e *enabler) ensureToken(ctx context.Context, agent *kubeopencodev1alpha1.Agent, link string, rotate bool) (string, error) {
	if rotate {
		return e.rotate(ctx, agent, link)
	}
	_, token, rejected, err := secrets.Ensure(ctx, e.client, e.client, e.keys, agent, link)
	if rejected {
		e.rejected(ctx, agent, link)
	}
	return token, err
}

// rotate writes a new token into the link's Secret. Two calls that rotate at
// once hand out one token: when a rotation loses the race to write the Secret
// and finds another proven token than the one it set out to replace, it
// returns that token instead of rotating a second time.
func (e *enabler) rotate(ctx context.Context, agent *kubeopencodev1alpha1.Agent, link string) (string, error) {
	key := secretKey(agent, link)
	for range maxRotateAttempts {
		secret := &corev1.Secret{}
		err := e.client.Get(ctx, key, secret)
		if apierrors.IsNotFound(err) {
			// No token to replace: a new Secret holds a new token.
			_, token, err := secrets.Create(ctx, e.client, e.keys, agent, link)
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			return token, err
		}
		if err != nil {
			return "", fmt.Errorf("reading share Secret %s: %w", key, err)
		}
		old, _, err := share.VerifySecretFresh(ctx, e.keys, secret, agent)
		unproven := errors.Is(err, share.ErrUnproven)
		if err != nil && !unproven {
			return "", fmt.Errorf("share Secret %s: %w", key, err)
		}
		token, err := e.replaceToken(ctx, agent, link, secret, unproven)
		if err == nil {
			return token, nil
		}
		if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			return "", err
		}
		token, settled, err := e.rotatedMeanwhile(ctx, agent, key, old)
		if settled || err != nil {
			return token, err
		}
	}
	return "", apierrors.NewConflict(agentsShareResource, agent.Name,
		fmt.Errorf("the share Secret %s kept changing while its token was being replaced", key))
}

// replaceToken writes a new token over the one in secret. An unproven
// Secret, which this system did not mint, is reported as rejected.
func (e *enabler) replaceToken(ctx context.Context, agent *kubeopencodev1alpha1.Agent, link string, secret *corev1.Secret, unproven bool) (string, error) {
	if unproven {
		e.rejected(ctx, agent, link)
		_, token, err := secrets.Replace(ctx, e.client, e.keys, agent, link, secret)
		return token, err
	}
	_, token, err := secrets.Rotate(ctx, e.client, e.keys, agent, link, secret)
	return token, err
}

// rotatedMeanwhile reads the Secret again after a rotation lost the race to
// write it, and reports as settled a proven token other than old, which a
// concurrent rotation wrote.
func (e *enabler) rotatedMeanwhile(ctx context.Context, agent *kubeopencodev1alpha1.Agent, key types.NamespacedName, old string) (string, bool, error) {
	latest := &corev1.Secret{}
	if err := e.client.Get(ctx, key, latest); err != nil {
		if apierrors.IsNotFound(err) {
			return "", false, nil
		}
		return "", false, fmt.Errorf("reading share Secret %s: %w", key, err)
	}
	token, _, err := share.VerifySecretFresh(ctx, e.keys, latest, agent)
	if err == nil && old != "" && !share.TokensEqual(token, old) {
		return token, true, nil
	}
	return "", false, nil
}

// deleteLeftover deletes the Secret a disabled link may have left behind. A
// leftover the system did not mint was planted: it is reported as rejected
// before it goes.
func (e *enabler) deleteLeftover(ctx context.Context, agent *kubeopencodev1alpha1.Agent, link string) error {
	secret := &corev1.Secret{}
	key := secretKey(agent, link)
	err := e.client.Get(ctx, key, secret)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		// Wrapped: a refusal of the server's own identity is not the
		// caller's to see as it is (apiError).
		return fmt.Errorf("reading share Secret %s: %w", key, err)
	}
	if _, _, err := share.VerifySecretFresh(ctx, e.keys, secret, agent); errors.Is(err, share.ErrUnproven) {
		e.rejected(ctx, agent, link)
	}
	_, err = secrets.Delete(ctx, e.client, e.client, agent, link)
	return err
}

// rejected reports a share Secret that claimed to be the link's without
// proof that this system minted its token. The token is never echoed.
func (e *enabler) rejected(ctx context.Context, agent *kubeopencodev1alpha1.Agent, link string) {
	name := share.LinkSecretName(agent.Name, link)
	klog.FromContext(ctx).Info("Rejected a share Secret whose token this system did not mint", "agent", klog.KObj(agent), "link", share.LinkDisplayName(link), "secret", klog.KRef(agent.Namespace, name))
	if e.recorder != nil {
		e.recorder.Eventf(agent, corev1.EventTypeWarning, share.ReasonShareSecretRejected,
			"Secret %s was rejected: its token carries no proof that this system minted it (planted or edited by hand). A new token was minted; the rejected one never opened the link.", name)
	}
}

// confirmEnabled reads the Agent again after its Secret was made: if a
// concurrent disable turned sharing off in between, it deletes the Secret it
// may have recreated and answers 409 Conflict, so that a disable that
// returned is never undone.
func (e *enabler) confirmEnabled(ctx context.Context, agent *kubeopencodev1alpha1.Agent, link string) error {
	latest := &kubeopencodev1alpha1.Agent{}
	err := e.client.Get(ctx, client.ObjectKeyFromObject(agent), latest)
	if err != nil && !apierrors.IsNotFound(err) {
		return apiError(ctx, err, agent.Name)
	}
	if err == nil && latest.UID == agent.UID {
		if l, ok := share.FindLink(latest, link); ok && l.Enabled {
			return nil
		}
	}
	if _, err := secrets.Delete(ctx, e.client, e.client, agent, link); err != nil {
		return apiError(ctx, err, agent.Name)
	}
	return apierrors.NewConflict(agentsShareResource, agent.Name,
		errors.New("the share link was disabled or the Agent deleted while it was being enabled"))
}

// readToken returns the token of an enabled link, its use count and its
// viewer count, or "" while its Secret does not exist yet or does not belong
// to the Agent.
func (e *enabler) readToken(ctx context.Context, agent *kubeopencodev1alpha1.Agent, link string) (string, int32, int32, error) {
	secret := &corev1.Secret{}
	key := secretKey(agent, link)
	if err := e.client.Get(ctx, key, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return "", 0, 0, nil
		}
		return "", 0, 0, apiError(ctx, fmt.Errorf("reading share Secret %s: %w", key, err), agent.Name)
	}
	token, _, err := share.VerifySecretFresh(ctx, e.keys, secret, agent)
	if err != nil {
		klog.FromContext(ctx).Info("Share Secret holds no token of the Agent", "agent", klog.KObj(agent), "secret", klog.KObj(secret), "reason", err.Error())
		return "", 0, 0, nil
	}
	return token, share.Uses(secret), share.Viewers(secret), nil
}

// secretKey names the Secret of an Agent's link.
func secretKey(agent *kubeopencodev1alpha1.Agent, link string) types.NamespacedName {
	return types.NamespacedName{Namespace: agent.Namespace, Name: share.LinkSecretName(agent.Name, link)}
}
