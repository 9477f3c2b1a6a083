package sharehttp

import (
	"net/http"
	"net/http/httptest"
	"testing"

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
