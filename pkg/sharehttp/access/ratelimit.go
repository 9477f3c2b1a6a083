package access

import (
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/utils/lru"
)

// RateLimiter limits requests per client address. It remembers at most a
// fixed number of addresses, least recently seen first out, so a flood from
// many addresses cannot grow its memory.
type RateLimiter struct {
	mu       sync.Mutex
	limiters *lru.Cache
	rate     rate.Limit
	burst    int
}

func NewRateLimiter(perSecond float64, burst, maxAddresses int) *RateLimiter {
	return &RateLimiter{
		limiters: lru.New(maxAddresses),
		rate:     rate.Limit(perSecond),
		burst:    burst,
	}
}

// key groups IPv6 clients by /64, the block one subscriber usually holds, so
// that rotating through one's own addresses does not escape the limit.
func (l *RateLimiter) key(addr netip.Addr) netip.Addr {
	if addr.Is6() && !addr.Is4In6() {
		p, _ := addr.Prefix(64)
		return p.Addr()
	}
	return addr
}

// Allow reports whether a request from addr may go on now. When it may not,
// retryAfter says when the next one would.
func (l *RateLimiter) Allow(addr netip.Addr, now time.Time) (ok bool, retryAfter time.Duration) {
	if l.rate <= 0 {
		return true, 0
	}
	k := l.key(addr)
	l.mu.Lock()
	defer l.mu.Unlock()
	var lim *rate.Limiter
	if v, found := l.limiters.Get(k); found {
		lim = v.(*rate.Limiter)
	} else {
		lim = rate.NewLimiter(l.rate, l.burst)
		l.limiters.Add(k, lim)
	}
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// Len returns how many addresses are remembered.
func (l *RateLimiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.limiters.Len()
}
