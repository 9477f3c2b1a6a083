package access

import (
	"net/http"
	"net/netip"
	"testing"
	"time"
)

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	tests := []struct {
		name    string
		remote  string
		xff     []string
		trusted []netip.Prefix
		want    string
	}{
		{name: "direct", remote: "203.0.113.7:4000", want: "203.0.113.7"},
		{name: "direct v6", remote: "[2001:db8::1]:4000", want: "2001:db8::1"},
		{name: "mapped", remote: "[::ffff:203.0.113.7]:4000", want: "203.0.113.7"},
		{name: "forged from untrusted peer", remote: "203.0.113.7:4000", xff: []string{"10.1.1.1"}, trusted: trusted, want: "203.0.113.7"},
		{name: "forged with no trusted proxies", remote: "10.0.0.5:4000", xff: []string{"192.168.1.1"}, want: "10.0.0.5"},
		{name: "one proxy", remote: "10.0.0.5:4000", xff: []string{"198.51.100.9"}, trusted: trusted, want: "198.51.100.9"},
		{name: "client-supplied prefix ignored", remote: "10.0.0.5:4000", xff: []string{"1.2.3.4, 198.51.100.9"}, trusted: trusted, want: "198.51.100.9"},
		{name: "chain of trusted proxies", remote: "10.0.0.5:4000", xff: []string{"1.2.3.4, 198.51.100.9, 10.0.0.6", "10.0.0.7"}, trusted: trusted, want: "198.51.100.9"},
		{name: "garbage hop", remote: "10.0.0.5:4000", xff: []string{"198.51.100.9, not-an-ip"}, trusted: trusted, want: "10.0.0.5"},
		{name: "all trusted", remote: "10.0.0.5:4000", xff: []string{"10.0.0.6"}, trusted: trusted, want: "10.0.0.6"},
		{name: "mapped hop", remote: "10.0.0.5:4000", xff: []string{"::ffff:198.51.100.9"}, trusted: trusted, want: "198.51.100.9"},
		{name: "v6 proxy", remote: "[fd00::5]:4000", xff: []string{"2001:db8::9"}, trusted: trusted, want: "2001:db8::9"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tc.remote, Header: http.Header{}}
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			got, ok := ClientIPResolver{TrustedProxies: tc.trusted}.ClientIP(r)
			if !ok || got.String() != tc.want {
				t.Errorf("ClientIP() = %s, %v; want %s", got, ok, tc.want)
			}
		})
	}
	if _, ok := (ClientIPResolver{}).ClientIP(&http.Request{RemoteAddr: "garbage"}); ok {
		t.Error("ClientIP accepted a garbage RemoteAddr")
	}
}

func TestIPRateLimiter(t *testing.T) {
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	l := NewRateLimiter(1, 3, 100)
	a := netip.MustParseAddr("203.0.113.7")
	for i := range 3 {
		if ok, _ := l.Allow(a, now); !ok {
			t.Fatalf("request %d within the burst refused", i)
		}
	}
	ok, retry := l.Allow(a, now)
	if ok || retry <= 0 || retry > time.Second {
		t.Fatalf("request past the burst: ok %v, retry after %s", ok, retry)
	}
	if ok, _ := l.Allow(netip.MustParseAddr("203.0.113.8"), now); !ok {
		t.Fatal("another address was limited")
	}
	if ok, _ := l.Allow(a, now.Add(time.Second)); !ok {
		t.Fatal("a refill did not let the address in again")
	}

	// Addresses of one IPv6 /64 share a limiter.
	v6 := NewRateLimiter(1, 1, 100)
	if ok, _ := v6.Allow(netip.MustParseAddr("2001:db8::1"), now); !ok {
		t.Fatal("first v6 request refused")
	}
	if ok, _ := v6.Allow(netip.MustParseAddr("2001:db8::2"), now); ok {
		t.Fatal("a second address of the same /64 escaped the limit")
	}

	// Memory is bounded however many addresses come.
	small := NewRateLimiter(1, 1, 50)
	for i := range 1000 {
		small.Allow(netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)}), now)
	}
	if n := small.Len(); n != 50 {
		t.Fatalf("limiter remembers %d addresses, want 50", n)
	}
}
