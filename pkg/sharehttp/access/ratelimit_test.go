package access

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"
)

// A flood from ever new addresses cannot grow the limiter past its bound,
// and an address it still remembers stays limited.
func TestRateLimiterMemoryIsBounded(t *testing.T) {
	const max = 1000
	l := NewRateLimiter(1, 2, max)
	now := time.Now()
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range 100000 {
		var addr netip.Addr
		if i%2 == 0 {
			addr = netip.AddrFrom4([4]byte{byte(rnd.IntN(256)), byte(rnd.IntN(256)), byte(rnd.IntN(256)), byte(rnd.IntN(256))})
		} else {
			var b [16]byte
			for j := range b {
				b[j] = byte(rnd.IntN(256))
			}
			addr = netip.AddrFrom16(b)
		}
		l.Allow(addr, now)
		if n := l.Len(); n > max {
			t.Fatalf("the limiter remembers %d addresses after %d requests, more than %d", n, i+1, max)
		}
	}
	// A scanner hammering from one address is still limited amid the flood.
	scanner := netip.MustParseAddr("203.0.113.9")
	allowed := 0
	for range 50 {
		if ok, _ := l.Allow(scanner, now); ok {
			allowed++
		}
		l.Allow(netip.AddrFrom4([4]byte{10, byte(rnd.IntN(256)), byte(rnd.IntN(256)), 1}), now)
	}
	if allowed != 2 {
		t.Errorf("the scanner got %d requests through, want its burst of 2", allowed)
	}
}

// Addresses of one IPv6 /64 share a limit: rotating through one's own
// block does not escape it.
func TestRateLimiterGroupsIPv6By64(t *testing.T) {
	l := NewRateLimiter(1, 3, 100)
	now := time.Now()
	allowed := 0
	for i := range 20 {
		addr := netip.MustParseAddr("2001:db8:1:2::1").As16()
		addr[15] = byte(i)
		addr[8] = byte(i * 7)
		if ok, _ := l.Allow(netip.AddrFrom16(addr), now); ok {
			allowed++
		}
	}
	if allowed != 3 {
		t.Errorf("%d requests from one /64 got through, want the burst of 3", allowed)
	}
	if ok, _ := l.Allow(netip.MustParseAddr("2001:db8:1:3::1"), now); !ok {
		t.Error("the next /64 is limited too")
	}
	if l.Len() != 2 {
		t.Errorf("the limiter remembers %d keys, want 2", l.Len())
	}
}
