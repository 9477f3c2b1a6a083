package replica

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/kubeopencode/share/pkg/share"
)

func testPeerKeys(id string, fill byte) share.Keys {
	return share.StaticKeys{Ring: share.NewKeyRing(map[string][]byte{id: bytes.Repeat([]byte{fill}, 32)})}
}

func forwardedRequest() *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://share.example.com/s/tok/terminal?resume=abc:1", nil)
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	return r
}

func TestPeerAuth(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	client := netip.MustParseAddr("203.0.113.7")
	for _, tc := range []struct {
		name string
		// change alters the signed request before it is checked, with the
		// owner's clock and its keys.
		change    func(r *http.Request, clk *clocktesting.FakeClock)
		ownerKeys share.Keys
		want      error
		forwarded bool
	}{
		{name: "a proven address", forwarded: true},
		{name: "a rotated ring still proves with the older key",
			ownerKeys: share.StaticKeys{Ring: share.NewKeyRing(map[string][]byte{
				"1": bytes.Repeat([]byte{1}, 32), "2": bytes.Repeat([]byte{2}, 32)})}, forwarded: true},
		{name: "no headers: a page that came directly",
			change: func(r *http.Request, _ *clocktesting.FakeClock) {
				r.Header.Del(HeaderClient)
				r.Header.Del(HeaderProof)
			}},
		{name: "an address without a proof", want: ErrNoProof, forwarded: true,
			change: func(r *http.Request, _ *clocktesting.FakeClock) { r.Header.Del(HeaderProof) }},
		{name: "a proof without an address", want: ErrNoProof, forwarded: true,
			change: func(r *http.Request, _ *clocktesting.FakeClock) { r.Header.Del(HeaderClient) }},
		{name: "two addresses", want: ErrNoProof, forwarded: true,
			change: func(r *http.Request, _ *clocktesting.FakeClock) { r.Header.Add(HeaderClient, "10.0.0.9") }},
		{name: "another address under the proof", want: ErrBadProof, forwarded: true,
			change: func(r *http.Request, _ *clocktesting.FakeClock) { r.Header.Set(HeaderClient, "10.0.0.9") }},
		{name: "an address that is not one", want: errBadAddress, forwarded: true,
			change: func(r *http.Request, _ *clocktesting.FakeClock) { r.Header.Set(HeaderClient, "example.com") }},
		{name: "another path", want: ErrBadProof, forwarded: true,
			change: func(r *http.Request, _ *clocktesting.FakeClock) { r.URL.Path = "/s/other/terminal" }},
		{name: "another resume point", want: ErrBadProof, forwarded: true,
			change: func(r *http.Request, _ *clocktesting.FakeClock) { r.URL.RawQuery = "resume=abc:2" }},
		{name: "another method", want: ErrBadProof, forwarded: true,
			change: func(r *http.Request, _ *clocktesting.FakeClock) { r.Method = http.MethodPost }},
		{name: "another WebSocket key", want: ErrBadProof, forwarded: true,
			change: func(r *http.Request, _ *clocktesting.FakeClock) {
				r.Header.Set("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA==")
			}},
		{name: "another host", want: ErrBadProof, forwarded: true,
			change: func(r *http.Request, _ *clocktesting.FakeClock) { r.Host = "evil.example.com" }},
		{name: "a key the owner does not have", ownerKeys: testPeerKeys("2", 2), want: ErrBadProof, forwarded: true},
		{name: "the right id with another key", ownerKeys: testPeerKeys("1", 9), want: ErrBadProof, forwarded: true},
		{name: "a proof too old", want: ErrStaleProof, forwarded: true,
			change: func(_ *http.Request, clk *clocktesting.FakeClock) { clk.Step(proofWindow + time.Second) }},
		{name: "a proof from the future", want: ErrStaleProof, forwarded: true,
			change: func(_ *http.Request, clk *clocktesting.FakeClock) { clk.SetTime(now.Add(-proofWindow - time.Second)) }},
		{name: "a mangled proof", want: ErrBadProof, forwarded: true,
			change: func(r *http.Request, _ *clocktesting.FakeClock) { r.Header.Set(HeaderProof, "1:x:y") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(now)
			signer := NewPeerAuth(testPeerKeys("1", 1), clk)
			ownerKeys := tc.ownerKeys
			if ownerKeys == nil {
				ownerKeys = testPeerKeys("1", 1)
			}
			owner := NewPeerAuth(ownerKeys, clk)
			r := forwardedRequest()
			if err := signer.Sign(r, client); err != nil {
				t.Fatal(err)
			}
			if tc.change != nil {
				tc.change(r, clk)
			}
			got, forwarded, err := owner.Verify(r)
			if !errors.Is(err, tc.want) || forwarded != tc.forwarded {
				t.Fatalf("Verify = %v, %v, %v; want forwarded %v, error %v", got, forwarded, err, tc.forwarded, tc.want)
			}
			if tc.want == nil && tc.forwarded && got != client {
				t.Fatalf("client %v, want %v", got, client)
			}
		})
	}
}

func TestPeerAuthRefusesReplays(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Now())
	auth := NewPeerAuth(testPeerKeys("1", 1), clk)
	r := forwardedRequest()
	if err := auth.Sign(r, netip.MustParseAddr("192.0.2.1")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := auth.Verify(r); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if _, _, err := auth.Verify(r); !errors.Is(err, ErrReplayed) {
		t.Fatalf("second use: %v, want ErrReplayed", err)
	}
	// Long after, the proof is stale rather than remembered.
	clk.Step(3 * proofWindow)
	if _, _, err := auth.Verify(r); !errors.Is(err, ErrStaleProof) {
		t.Fatalf("much later: %v, want ErrStaleProof", err)
	}
	// A new proof is let in, and the old one is forgotten meanwhile.
	fresh := forwardedRequest()
	if err := auth.Sign(fresh, netip.MustParseAddr("192.0.2.1")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := auth.Verify(fresh); err != nil {
		t.Fatalf("a fresh proof: %v", err)
	}
	if n := len(auth.seen); n != 1 {
		t.Fatalf("%d proofs remembered, want only the fresh one", n)
	}
}

func TestPeerAuthSignsNothingWithoutAKey(t *testing.T) {
	auth := NewPeerAuth(share.StaticKeys{}, clocktesting.NewFakeClock(time.Now()))
	r := forwardedRequest()
	if err := auth.Sign(r, netip.MustParseAddr("192.0.2.1")); !errors.Is(err, ErrNoPeerKey) {
		t.Fatalf("Sign without a key: %v", err)
	}
	if r.Header.Get(HeaderClient) != "" {
		t.Fatal("an address went without a proof")
	}
}
