package share

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
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

// UsedUp reports whether a link limited by maxUses has no use left.
func UsedUp(l Link, secret *corev1.Secret) bool {
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
