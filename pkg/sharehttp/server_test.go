package sharehttp

import (
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache/informertest"

	"github.com/kubeopencode/share/pkg/share"
	"github.com/kubeopencode/share/pkg/share/sharetest"
	"github.com/kubeopencode/share/pkg/sharehttp/access"
	"github.com/kubeopencode/share/pkg/sharehttp/web"
)

// newTestServer returns a listener whose caches hold no links, so every
// token is unknown.
func newTestServer(t testing.TB, mutate func(*Options)) *Server {
	t.Helper()
	opts := NewOptions()
	opts.RequestsPerSecond = 0
	if mutate != nil {
		mutate(opts)
	}
	if errs := opts.Validate(); len(errs) > 0 {
		t.Fatal(errs)
	}
	return newServer(opts, access.NewResolverFor(&informertest.FakeInformers{}, nil, sharetest.Keys(), clock.RealClock{}, nil), nil, nil, clock.RealClock{})
}

func TestRoutesRefuseUnknownTokens(t *testing.T) {
	h := newTestServer(t, nil).Handler()
	token, _ := share.NewToken()
	tests := []struct {
		name   string
		method string
		path   string
		header map[string]string
		code   int
		body   string
	}{
		{name: "page of an unknown link", path: "/s/" + token, code: http.StatusNotFound, body: "<!doctype html>"},
		{name: "info of an unknown link", path: "/s/" + token + "/info", code: http.StatusNotFound, body: `"reason":"NotFound"`},
		{name: "malformed token", path: "/s/not-a-token/info", code: http.StatusNotFound},
		{name: "terminal without upgrade", path: "/s/" + token + "/terminal", code: http.StatusBadRequest},
		{name: "terminal of an unknown link", path: "/s/" + token + "/terminal", code: http.StatusNotFound,
			header: map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}},
		{name: "foreign origin", path: "/s/" + token + "/terminal", code: http.StatusForbidden,
			header: map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": "https://evil.example"}},
		// Another method is answered as a link that does not exist, like
		// any other request under /s/ that is not one of the listener's.
		{name: "post", method: http.MethodPost, path: "/s/" + token + "/info", code: http.StatusNotFound, body: "<!doctype html>"},
		{name: "root", path: "/", code: http.StatusNotFound},
		{name: "prefix only", path: "/s/", code: http.StatusNotFound},
		{name: "static", path: "/_share/static/share.js", code: http.StatusOK},
		{name: "static listing", path: "/_share/static/", code: http.StatusNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			req := httptest.NewRequest(method, "http://share.example"+tc.path, nil)
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.code {
				t.Fatalf("%s %s: %d, want %d: %s", method, tc.path, rec.Code, tc.code, rec.Body)
			}
			if !strings.Contains(rec.Body.String(), tc.body) {
				t.Errorf("body %q does not contain %q", rec.Body, tc.body)
			}
			for header, want := range map[string]string{"Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"} {
				if got := rec.Header().Get(header); got != want {
					t.Errorf("%s = %q, want %q", header, got, want)
				}
			}
			if strings.Contains(rec.Body.String(), token) {
				t.Error("the response echoes the token")
			}
			// The page, and only the page, allows the <style> elements
			// carrying its own nonce.
			csp := rec.Header().Get("Content-Security-Policy")
			if strings.HasPrefix(rec.Body.String(), "<!doctype html>") {
				m := regexp.MustCompile(`'nonce-([A-Za-z0-9_-]{22,})'`).FindStringSubmatch(csp)
				if m == nil || csp != web.PageContentSecurityPolicy(m[1]) || !strings.Contains(rec.Body.String(), ` nonce="`+m[1]+`"`) {
					t.Errorf("the page's CSP %q does not name the page's nonce", csp)
				}
			} else if csp != contentSecurityPolicy {
				t.Errorf("CSP %q, want %q", csp, contentSecurityPolicy)
			}
		})
	}
}

func TestRateLimitAnswers429WithRetryAfter(t *testing.T) {
	h := newTestServer(t, func(o *Options) { o.RequestsPerSecond, o.RequestBurst = 1, 2 }).Handler()
	token, _ := share.NewToken()
	var codes []int
	for range 4 {
		req := httptest.NewRequest(http.MethodGet, "/s/"+token+"/info", nil)
		req.RemoteAddr = "203.0.113.9:5555"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		codes = append(codes, rec.Code)
		if rec.Code == http.StatusTooManyRequests && rec.Header().Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
	}
	if codes[0] != http.StatusNotFound || codes[1] != http.StatusNotFound || codes[2] != http.StatusTooManyRequests || codes[3] != http.StatusTooManyRequests {
		t.Fatalf("codes %v, want 404 404 429 429", codes)
	}
}

// FuzzShareRoutes sends hostile paths and headers to the listener: it must
// never fail with a server error, never panic, and never echo the path.
func FuzzShareRoutes(f *testing.F) {
	token, _ := share.NewToken()
	for _, seed := range []string{
		"/s/" + token, "/s/" + token + "/info", "/s/" + token + "/terminal", "/s/../../etc/passwd", "/s/%00/info",
		"/s/" + strings.Repeat("A", 5000), "/_share/static/../../web.go", "/s//info", "/s/a/b/c/d", "/%2e%2e/",
	} {
		f.Add(seed, "203.0.113.7")
	}
	s := newTestServer(f, nil)
	h := s.Handler()
	f.Fuzz(func(t *testing.T, path, xff string) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t#?") {
			return
		}
		req, err := http.NewRequest(http.MethodGet, "http://share.example"+path, nil)
		if err != nil {
			return
		}
		req.RemoteAddr = "198.51.100.1:1234"
		req.Header.Set("X-Forwarded-For", xff)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("GET %q: %d", path, rec.Code)
		}
		if len(path) > 8 && strings.Contains(rec.Body.String(), path) {
			t.Fatalf("GET %q echoes the path", path)
		}
	})
}

// When the caches stop following the cluster, open sessions end with
// Unavailable: a revocation may have happened unseen.
func TestSessionsEndWhenWatchesAreLost(t *testing.T) {
	f := newLinkFixture(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Run starts what watches the caches' health; the fake cache it
	// starts returns at once.
	go func() { _ = f.server.resolver.Run(ctx) }()
	addr, _ := f.serve(t)
	conn := dialSession(t, addr, f.token)
	<-f.exec.started

	f.cacheLost.Store(true)
	status, code := readUntilClosed(t, conn, 10*time.Second)
	if code != closeServerError || status == nil || status.Reason != access.ReasonUnavailable {
		t.Fatalf("the session ended with %d %+v, want 1011 Unavailable", code, status)
	}
	if got := infoStatus(t, addr, f.token); got != http.StatusServiceUnavailable {
		t.Errorf("/info answers %d while the watches are down, want 503", got)
	}
}

func infoStatus(t *testing.T, addr, token string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/s/" + token + "/info")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
