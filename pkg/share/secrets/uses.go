package secrets

import (
	"context"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
	"github.com/kubeopencode/share/pkg/share"
)

// ConsumeUse counts one terminal connection of the Agent's link ("" being
// the default link), which holds token, and returns the count. The Secret is
// updated with its resourceVersion, so of two connections racing for a
// one-time link exactly one gets it; the other gets share.ErrUsedUp. Reader should
// read through to the API server. Only a Secret whose token this system
// minted counts.
func ConsumeUse(ctx context.Context, r client.Reader, w client.Writer, ring *share.KeyRing, agent *v1alpha1.Agent, link, token string) (int32, error) {
	key := types.NamespacedName{Namespace: agent.Namespace, Name: share.LinkSecretName(agent.Name, link)}
	l, ok := share.FindLink(agent, link)
	if !ok {
		return 0, fmt.Errorf("share link %q of Agent %s/%s: %w", link, agent.Namespace, agent.Name, share.ErrForeignSecret)
	}
	for range 10 {
		secret := &corev1.Secret{}
		if err := r.Get(ctx, key, secret); err != nil {
			return 0, fmt.Errorf("reading share Secret %s: %w", key, err)
		}
		if held, _, err := share.VerifySecret(ring, secret, agent); err != nil || !share.TokensEqual(held, token) {
			return 0, fmt.Errorf("share Secret %s: %w", key, share.ErrForeignSecret)
		}
		if share.UsedUp(l, secret) {
			return share.Uses(secret), share.ErrUsedUp
		}
		n := share.Uses(secret) + 1
		if secret.Annotations == nil {
			secret.Annotations = map[string]string{}
		}
		secret.Annotations[share.AnnotationUses] = strconv.Itoa(int(n))
		err := w.Update(ctx, secret)
		if err == nil {
			return n, nil
		}
		if !apierrors.IsConflict(err) {
			return 0, fmt.Errorf("counting a use of share Secret %s: %w", key, err)
		}
	}
	return 0, fmt.Errorf("counting a use of share Secret %s: too many concurrent updates", key)
}

// ReturnUse gives back one use of the link called link that
// ConsumeUse took for a terminal connection that then did not open, so
// that a refused or failed attempt does not spend a one-time link. It is
// updated with the Secret's resourceVersion, like ConsumeUse, so a use
// taken meanwhile by another connection is never given back with it. A
// Secret that no longer holds token (the link was rotated, which starts its
// count again) or whose token this system did not mint is left alone.
func ReturnUse(ctx context.Context, r client.Reader, w client.Writer, ring *share.KeyRing, agent *v1alpha1.Agent, link, token string) error {
	key := types.NamespacedName{Namespace: agent.Namespace, Name: share.LinkSecretName(agent.Name, link)}
	for range 10 {
		secret := &corev1.Secret{}
		if err := r.Get(ctx, key, secret); err != nil {
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("reading share Secret %s: %w", key, err)
		}
		if held, _, err := share.VerifySecret(ring, secret, agent); err != nil || !share.TokensEqual(held, token) {
			return nil
		}
		n := share.Uses(secret)
		if n == 0 {
			return nil
		}
		secret.Annotations[share.AnnotationUses] = strconv.Itoa(int(n - 1))
		err := w.Update(ctx, secret)
		if err == nil || apierrors.IsNotFound(err) {
			return nil
		}
		if !apierrors.IsConflict(err) {
			return fmt.Errorf("giving back a use of share Secret %s: %w", key, err)
		}
	}
	return fmt.Errorf("giving back a use of share Secret %s: too many concurrent updates", key)
}
