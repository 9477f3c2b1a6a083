package sharehttp

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestCheckOrigin(t *testing.T) {
	tests := []struct {
		name      string
		publicURL string
		tls       bool
		origins   []string // nil: no Origin header at all
		want      bool
	}{
		{name: "no Origin: not a browser", want: true},
		{name: "the page's own origin", origins: []string{"http://share.example"}, want: true},
		{name: "the host in another case", origins: []string{"HTTP://Share.Example"}, want: true},
		{name: "the page's own origin over TLS", tls: true, origins: []string{"https://share.example"}, want: true},
		{name: "a foreign host", origins: []string{"http://evil.example"}},
		{name: "the same host on another port", origins: []string{"http://share.example:8443"}},
		{name: "https on a plain listener", origins: []string{"https://share.example"}},
		{name: "http on a TLS listener", tls: true, origins: []string{"http://share.example"}},
		{name: "empty", origins: []string{""}},
		{name: "null, as a sandboxed frame sends", origins: []string{"null"}},
		{name: "two Origins", origins: []string{"http://share.example", "http://share.example"}},
		{name: "with a path", origins: []string{"http://share.example/s/x"}},
		{name: "with user info", origins: []string{"http://user@share.example"}},
		{name: "not a URL", origins: []string{"share.example"}},
		{name: "the public URL behind a TLS proxy", publicURL: "https://public.example", origins: []string{"https://public.example"}, want: true},
		{name: "the public URL's host over http", publicURL: "https://public.example", origins: []string{"http://public.example"}},
		{name: "the public URL's scheme on the request's host", publicURL: "https://public.example", origins: []string{"https://share.example"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, func(o *Options) { o.PublicURL = tc.publicURL })
			req := httptest.NewRequest(http.MethodGet, "http://share.example/s/x/terminal", nil)
			if tc.tls {
				req.TLS = &tls.ConnectionState{}
			}
			for _, o := range tc.origins {
				req.Header.Add("Origin", o)
			}
			if got := s.checkOrigin(req); got != tc.want {
				t.Errorf("checkOrigin(%q) = %v, want %v", tc.origins, got, tc.want)
			}
		})
	}
}
