package share

import (
	"fmt"
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kubeopencode/share/pkg/apis/kubeopencode/validation"
)

// Reasons of the ShareReady condition, also reported by the agents/share
// subresource and the share listener.
const (
	ReasonActive        = "Active"
	ReasonDisabled      = "Disabled"
	ReasonExpired       = "Expired"
	ReasonAgentNotReady = "AgentNotReady"
	// ReasonSecretConflict means a Secret with the share Secret's name exists
	// but does not belong to the Agent, so it is not used.
	ReasonSecretConflict = "SecretConflict"
	// ReasonShareSecretRejected is the reason of the Warning Event about a
	// Secret that claimed to be a link's share Secret without proof that
	// this system minted its token.
	ReasonShareSecretRejected = "ShareSecretRejected"
)

// Decision says whether an Agent's share link gives access, and why.
type Decision struct {
	Active  bool
	Reason  string
	Message string
	// ExpiresAt is the expiry of the link, nil when it does not expire.
	ExpiresAt *metav1.Time
}

// Expired reports whether a link with the given expiry has expired at now.
func Expired(expiresAt *metav1.Time, now time.Time) bool {
	return expiresAt != nil && !now.Before(expiresAt.Time)
}

// ParseAllowedIPs parses a list of allowed addresses. The error names the
// first bad entry by index.
func ParseAllowedIPs(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for i, s := range list {
		p, err := validation.ParseIPOrCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("allowedIPs[%d]: %w", i, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// IPAllowed reports whether addr is in one of the allowed ranges. An empty list
// allows every address.
func IPAllowed(allowed []netip.Prefix, addr netip.Addr) bool {
	if len(allowed) == 0 {
		return true
	}
	addr = addr.Unmap()
	for _, p := range allowed {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}
