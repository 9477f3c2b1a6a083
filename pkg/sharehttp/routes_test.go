package sharehttp

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/kubeopencode/share/pkg/share"
)

// Every request under /s/ that does not name a link in one of the
// listener's own paths is answered exactly as an unknown token's page, so
// that the shape of the answer tells a probe nothing.
func TestOddSharePathsAnswerAsUnknownTokens(t *testing.T) {
	f := newLinkFixture(t, nil)
	h := f.server.Handler()
	unknown, _ := share.NewToken()
	do := func(method, target string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, "http://share.example/", nil)
		// Set the path as sent, uncleaned, as a client on the wire can.
		req.URL.Path, req.RequestURI = target, target
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	want := do(http.MethodGet, "/s/"+unknown)
	if want.Code != http.StatusNotFound {
		t.Fatalf("an unknown token answers %d", want.Code)
	}
	wantNonce := withoutNonce(t, want)
	tok := f.token
	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/s"},
		{http.MethodGet, "/s/"},
		{http.MethodGet, "/s//"},
		{http.MethodGet, "/s/" + tok + "/"},
		{http.MethodGet, "/s/" + tok + "/x"},
		{http.MethodGet, "/s/" + tok + "/info/"},
		{http.MethodGet, "/s/" + tok + "/info/x"},
		{http.MethodGet, "/s/" + tok + "/terminal/x"},
		{http.MethodGet, "/s//" + tok},
		{http.MethodGet, "/s//" + tok + "/info"},
		{http.MethodGet, "/s/./" + tok},
		{http.MethodGet, "/s/../s/" + tok},
		{http.MethodGet, "/s/x/../" + tok + "/info"},
		{http.MethodGet, "/s/" + tok + "/./info"},
		{http.MethodGet, "/s/.."},
		{http.MethodPost, "/s/" + tok},
		{http.MethodPost, "/s/" + tok + "/info"},
		{http.MethodPut, "/s/" + tok + "/terminal"},
		{http.MethodDelete, "/s/" + unknown},
		{http.MethodOptions, "/s/" + tok + "/info"},
	} {
		t.Run(tc.method+" "+strings.ReplaceAll(tc.path, tok, "<token>"), func(t *testing.T) {
			got := do(tc.method, tc.path)
			// Each page has its own style nonce; all else is the same.
			if nonce := withoutNonce(t, got); nonce == wantNonce {
				t.Errorf("two pages have the same style nonce %q", nonce)
			}
			if got.Code != want.Code || got.Body.String() != want.Body.String() || fmt.Sprint(got.Header()) != fmt.Sprint(want.Header()) {
				t.Errorf("answered %d %v, want %d %v, the page of an unknown token", got.Code, got.Header(), want.Code, want.Header())
			}
		})
	}
	// The listener's own paths still work.
	if rec := do(http.MethodGet, "/s/"+tok+"/info"); rec.Code != http.StatusOK {
		t.Errorf("/info of the link: %d", rec.Code)
	}
	if rec := do(http.MethodGet, "/s/"+tok); rec.Code != http.StatusOK {
		t.Errorf("the link's page: %d", rec.Code)
	}
}

var styleNonce = regexp.MustCompile(`'nonce-([A-Za-z0-9_-]+)'`)

// withoutNonce replaces the style nonce of a page's answer, in its CSP and
// its body, with a fixed placeholder, and returns it; the nonce must be
// there, in both.
func withoutNonce(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	h := rec.Header()
	m := styleNonce.FindStringSubmatch(h.Get("Content-Security-Policy"))
	if m == nil || !strings.Contains(rec.Body.String(), ` nonce="`+m[1]+`"`) {
		t.Fatalf("the page's answer has no style nonce in both its CSP %q and its body", h.Get("Content-Security-Policy"))
	}
	h.Set("Content-Security-Policy", strings.Replace(h.Get("Content-Security-Policy"), m[1], "<nonce>", 1))
	body := strings.Replace(rec.Body.String(), m[1], "<nonce>", 1)
	rec.Body.Reset()
	rec.Body.WriteString(body)
	return m[1]
}
