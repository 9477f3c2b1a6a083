package access

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// ClientIPResolver finds the address of the client behind a request. The
// token is the only credential on the public listener, so the address checked
// against allowedIPs and rate limits must not be something a client can claim:
// X-Forwarded-For is honoured only when the direct peer is a trusted proxy.
type ClientIPResolver struct {
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
}

// ClientIP returns the client's address: the direct peer, or, when the peer
// is a trusted proxy, the rightmost X-Forwarded-For hop that is not itself a
// trusted proxy. IPv4-mapped IPv6 addresses are returned as IPv4. ok is false
// when no address can be made out.
func (c ClientIPResolver) ClientIP(r *http.Request) (addr netip.Addr, ok bool) {
	peer, ok := parseRemoteAddr(r.RemoteAddr)
	if !ok {
		return netip.Addr{}, false
	}
	if !c.trusted(peer) {
		return peer, true
	}
	hops := forwardedHops(r.Header.Values("X-Forwarded-For"))
	for i := len(hops) - 1; i >= 0; i-- {
		hop, err := netip.ParseAddr(hops[i])
		if err != nil || hop.Zone() != "" {
			// A hop that is not an address was written by someone we do not
			// trust: stop at the last address we can vouch for.
			return peer, true
		}
		hop = hop.Unmap()
		if !c.trusted(hop) {
			return hop, true
		}
		peer = hop
	}
	return peer, true
}

func (c ClientIPResolver) trusted(addr netip.Addr) bool {
	for _, p := range c.TrustedProxies {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

func parseRemoteAddr(remote string) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return addr.WithZone("").Unmap(), true
}

// forwardedHops splits X-Forwarded-For headers, which proxies may send as
// several header lines or one comma-separated line, into trimmed hops.
func forwardedHops(values []string) []string {
	var hops []string
	for _, v := range values {
		for _, h := range strings.Split(v, ",") {
			if h = strings.TrimSpace(h); h != "" {
				hops = append(hops, h)
			}
		}
	}
	return hops
}
