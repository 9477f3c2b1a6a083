package sharehttp

import (
	"crypto/tls"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"k8s.io/utils/clock"

	"github.com/kubeopencode/share/pkg/share/sharetest"

	"github.com/kubeopencode/share/pkg/sharehttp/replica"
)

// A listener on its own has no peers whose forwarded client address it
// could believe: a request that carries one is refused, whatever the
// address, before the token is looked at.
func TestLoneListenerRefusesForwardedClients(t *testing.T) {
	f := newLinkFixture(t, nil)
	h := f.server.Handler()
	for _, tc := range []struct {
		name   string
		path   string
		header http.Header
		want   int
	}{
		{name: "info, no forwarded address", path: "/s/" + f.token + "/info", want: http.StatusOK},
		{name: "info, an address", path: "/s/" + f.token + "/info",
			header: http.Header{replica.HeaderClient: {"192.0.2.1"}}, want: http.StatusForbidden},
		{name: "info, an address and a proof", path: "/s/" + f.token + "/info",
			header: http.Header{replica.HeaderClient: {"192.0.2.1"}, replica.HeaderProof: {"1:1:AAAA"}}, want: http.StatusForbidden},
		{name: "info, a proof", path: "/s/" + f.token + "/info",
			header: http.Header{replica.HeaderProof: {"1:1:AAAA"}}, want: http.StatusForbidden},
		{name: "the page, an address", path: "/s/" + f.token,
			header: http.Header{replica.HeaderClient: {"192.0.2.1"}}, want: http.StatusForbidden},
		{name: "the terminal, an address", path: "/s/" + f.token + "/terminal",
			header: http.Header{replica.HeaderClient: {"192.0.2.1"}, "Connection": {"Upgrade"}, "Upgrade": {"websocket"},
				"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}, want: http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "http://share.example"+tc.path, nil)
			for k, v := range tc.header {
				req.Header[http.CanonicalHeaderKey(k)] = v
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("%s answers %d, want %d: %s", tc.path, rec.Code, tc.want, rec.Body)
			}
		})
	}
}

// Replicas that serve HTTPS reach each other at their pod IPs with the
// listener's certificate, issued for the public host; one of a private CA
// or a self-signed one must do between them, as it does for the browsers
// the operator gave its CA.
func TestPeersTrustTheListenersCertificate(t *testing.T) {
	peer := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	peer.StartTLS()
	t.Cleanup(peer.Close)
	// httptest's certificate is self-signed for example.com and 127.0.0.1.
	certFile := filepath.Join(t.TempDir(), "tls.crt")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: peer.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	get := func(c *tls.Config) error {
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: c}}
		resp, err := client.Get(peer.URL)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}

	c, err := peerTLS(certFile, "https://example.com/")
	if err != nil {
		t.Fatal(err)
	}
	if c.ServerName != "example.com" {
		t.Errorf("peers are asked for %q, want the public host", c.ServerName)
	}
	if err := get(c); err != nil {
		t.Errorf("a peer with the listener's certificate: %v", err)
	}
	if err := get(&tls.Config{ServerName: "example.com", MinVersion: tls.VersionTLS12}); err == nil {
		t.Error("the system's roots alone trust httptest's certificate: this test shows nothing")
	}
	wrongHost, err := peerTLS(certFile, "https://share.example.org/")
	if err != nil {
		t.Fatal(err)
	}
	if err := get(wrongHost); err == nil {
		t.Error("a peer whose certificate does not name the public host was trusted")
	}
	if _, err := peerTLS(filepath.Join(t.TempDir(), "missing.crt"), ""); err == nil {
		t.Error("a missing certificate file was taken")
	}
}

// A page that another replica forwards was counted against its client's
// request rate there; the owner does not count it again, but still counts
// the client's own requests.
func TestForwardedRequestsAreCountedOnce(t *testing.T) {
	f := newLinkFixture(t, func(o *Options) { o.RequestsPerSecond, o.RequestBurst = 0.001, 1 })
	auth := replica.NewPeerAuth(sharetest.Keys(), clock.RealClock{})
	f.server.replicas = &replica.Replicas{Auth: auth}
	h := f.server.Handler()
	client := netip.MustParseAddr("192.0.2.7")
	n := 0
	get := func(forwarded bool) int {
		n++
		req := httptest.NewRequest(http.MethodGet, "http://share.example/s/"+f.token+"/info", nil)
		req.RemoteAddr = client.String() + ":4242"
		if forwarded {
			req.RemoteAddr = "10.0.0.2:4242" // the forwarding replica
			// What makes each forward's proof its own, as a WebSocket key does.
			req.Header.Set("Sec-Websocket-Key", strconv.Itoa(n))
			if err := auth.Sign(req, client); err != nil {
				t.Fatal(err)
			}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	for i := range 3 {
		if code := get(true); code != http.StatusOK {
			t.Fatalf("forwarded request %d answers %d, want 200: counted against the client again", i+1, code)
		}
	}
	if code := get(false); code != http.StatusOK {
		t.Fatalf("the client's own first request answers %d, want 200", code)
	}
	if code := get(false); code != http.StatusTooManyRequests {
		t.Fatalf("the client's own second request answers %d, want 429 past its burst of 1", code)
	}
}
