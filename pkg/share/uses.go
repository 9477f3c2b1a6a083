package share

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/v1alpha1"
)

const (
	// AnnotationUses counts the terminal connections a link has opened. It
	// lives on the share Secret, with the token it counts for, so that a new
	// token starts from zero.
	AnnotationUses = "kubeopencode.io/uses"
	// ReasonUsedUp means a link limited by maxUses has opened all its
	// terminal connections.
	ReasonUsedUp = "UsedUp"
)

// ErrUsedUp means a link has no terminal connection left to open.
var ErrUsedUp = errors.New("the share link has been used as many times as it may be")

// Uses returns how many terminal connections the Secret's token has opened.
func Uses(secret *corev1.Secret) int32 {
	n, err := strconv.ParseInt(secret.Annotations[AnnotationUses], 10, 32)
	if err != nil || n < 0 {
		return 0
	}
	return int32(n)
}

// UsedUp reports whether a default link limited by maxUses has no use left.
func UsedUp(s *v1alpha1.ShareSpec, secret *corev1.Secret) bool {
	return s != nil && s.MaxUses != nil && secret != nil && Uses(secret) >= *s.MaxUses
}

// LinkUsedUp reports whether a link limited by maxUses has no use left.
func LinkUsedUp(l Link, secret *corev1.Secret) bool {
	return l.MaxUses != nil && secret != nil && Uses(secret) >= *l.MaxUses
}

// Viewers returns how many pages have the link of the Secret open, the sum
// of what each share listener replica last recorded on it.
func Viewers(secret *corev1.Secret) int32 {
	return ViewersExcept(secret, "")
}

// ViewersExcept is Viewers without the count under the annotation key
// except, a replica's own.
func ViewersExcept(secret *corev1.Secret, except string) int32 {
	if secret == nil {
		return 0
	}
	var sum int32
	for k, v := range secret.Annotations {
		if !strings.HasPrefix(k, AnnotationViewersPrefix) || k == except {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 32); err == nil && n > 0 {
			sum += int32(n)
		}
	}
	return sum
}

// ViewersAnnotation returns the annotation key under which the share
// listener replica with the given identity records its viewer count.
func ViewersAnnotation(replica string) string {
	sum := sha256.Sum256([]byte(replica))
	return AnnotationViewersPrefix + hex.EncodeToString(sum[:])[:12]
}

// ClearViewers removes every replica's viewer count from a Secret's
// annotations.
func ClearViewers(annotations map[string]string) {
	for k := range annotations {
		if strings.HasPrefix(k, AnnotationViewersPrefix) {
			delete(annotations, k)
		}
	}
}

// ConsumeLinkUse counts one terminal connection of the Agent's link ("" being
// the default link), which holds token, and returns the count. The Secret is
// updated with its resourceVersion, so of two connections racing for a
// one-time link exactly one gets it; the other gets ErrUsedUp. Reader should
// read through to the API server. Only a Secret whose token this system
// minted counts.
func ConsumeLinkUse(ctx context.Context, r client.Reader, w client.Writer, ring *KeyRing, agent *v1alpha1.Agent, link, token string) (int32, error) {
	key := types.NamespacedName{Namespace: agent.Namespace, Name: LinkSecretName(agent.Name, link)}
	l, ok := FindLink(agent, link)
	if !ok {
		return 0, fmt.Errorf("share link %q of Agent %s/%s: %w", link, agent.Namespace, agent.Name, ErrForeignSecret)
	}
	for range 10 {
		secret := &corev1.Secret{}
		if err := r.Get(ctx, key, secret); err != nil {
			return 0, fmt.Errorf("reading share Secret %s: %w", key, err)
		}
		if held, _, err := VerifySecret(ring, secret, agent); err != nil || !TokensEqual(held, token) {
			return 0, fmt.Errorf("share Secret %s: %w", key, ErrForeignSecret)
		}
		if LinkUsedUp(l, secret) {
			return Uses(secret), ErrUsedUp
		}
		n := Uses(secret) + 1
		if secret.Annotations == nil {
			secret.Annotations = map[string]string{}
		}
		secret.Annotations[AnnotationUses] = strconv.Itoa(int(n))
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

// ReturnLinkUse gives back one use of the link called link that
// ConsumeLinkUse took for a terminal connection that then did not open, so
// that a refused or failed attempt does not spend a one-time link. It is
// updated with the Secret's resourceVersion, like ConsumeLinkUse, so a use
// taken meanwhile by another connection is never given back with it. A
// Secret that no longer holds token (the link was rotated, which starts its
// count again) or whose token this system did not mint is left alone.
func ReturnLinkUse(ctx context.Context, r client.Reader, w client.Writer, ring *KeyRing, agent *v1alpha1.Agent, link, token string) error {
	key := types.NamespacedName{Namespace: agent.Namespace, Name: LinkSecretName(agent.Name, link)}
	for range 10 {
		secret := &corev1.Secret{}
		if err := r.Get(ctx, key, secret); err != nil {
			if apierrors.IsNotFound(err) {
				return nil
			}
			return fmt.Errorf("reading share Secret %s: %w", key, err)
		}
		if held, _, err := VerifySecret(ring, secret, agent); err != nil || !TokensEqual(held, token) {
			return nil
		}
		n := Uses(secret)
		if n == 0 {
			return nil
		}
		secret.Annotations[AnnotationUses] = strconv.Itoa(int(n - 1))
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
