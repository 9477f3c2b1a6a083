package web

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestIndexHasNoInlineScriptOrStyle(t *testing.T) {
	page := string(Page("test-nonce"))
	for _, re := range []string{
		`<script(?:\s[^>]*)?>\s*[^<\s]`, // a script with a body
		`<style`, `\sstyle=`, `\son[a-z]+=`, `javascript:`,
	} {
		if m := regexp.MustCompile(re).FindString(page); m != "" {
			t.Errorf("index.html has %q, which the CSP forbids", m)
		}
	}
	for _, tag := range regexp.MustCompile(`<script[^>]*>`).FindAllString(page, -1) {
		if !strings.Contains(tag, ` src="`) {
			t.Errorf("index.html has the inline script %q", tag)
		}
	}
	if !strings.Contains(ContentSecurityPolicy, "script-src 'self';") || !strings.Contains(ContentSecurityPolicy, "style-src 'self';") {
		t.Errorf("ContentSecurityPolicy %q allows more than the page needs", ContentSecurityPolicy)
	}
	// The nonce is given to the page's own style sheet, for share.js to
	// read, and nowhere else.
	if n := strings.Count(page, "test-nonce"); n != 1 || !regexp.MustCompile(`<link id="page-style" rel="stylesheet" href="[^"]+" nonce="test-nonce">`).MatchString(page) {
		t.Errorf("the page carries its nonce %d times, or not on its style sheet:\n%s", n, page)
	}
}

func TestPageContentSecurityPolicy(t *testing.T) {
	policy := PageContentSecurityPolicy("abc")
	if want := strings.Replace(ContentSecurityPolicy, "style-src 'self';", "style-src 'self' 'nonce-abc';", 1); policy != want {
		t.Errorf("the page's policy is %q, want %q", policy, want)
	}
	for _, tc := range []struct {
		directive string
		want      bool
	}{
		{"script-src 'self';", true},
		{"style-src 'self' 'nonce-abc';", true},
		{"default-src 'none';", true},
		{"frame-ancestors 'none';", true},
		{"'unsafe-inline'", false},
		{"'unsafe-eval'", false},
		{"'unsafe-hashes'", false},
		{"style-src-attr", false},
		{"script-src 'self' 'nonce", false},
	} {
		if got := strings.Contains(policy, tc.directive); got != tc.want {
			t.Errorf("the page's policy %q has %q: %v, want %v", policy, tc.directive, got, tc.want)
		}
	}
}

func TestWritePage(t *testing.T) {
	nonceRE := regexp.MustCompile(`'nonce-([A-Za-z0-9_-]+)'`)
	seen := map[string]bool{}
	for _, code := range []int{http.StatusOK, http.StatusNotFound, http.StatusOK} {
		rec := httptest.NewRecorder()
		WritePage(rec, code)
		if rec.Code != code {
			t.Errorf("status %d, want %d", rec.Code, code)
		}
		h := rec.Header()
		if cc := h.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control %q: a cached page would reuse its nonce", cc)
		}
		if ct := h.Get("Content-Type"); ct != "text/html; charset=utf-8" {
			t.Errorf("Content-Type %q", ct)
		}
		m := nonceRE.FindStringSubmatch(h.Get("Content-Security-Policy"))
		if m == nil {
			t.Fatalf("no nonce in %q", h.Get("Content-Security-Policy"))
		}
		nonce := m[1]
		if len(nonce) < 22 { // 128 bits at least
			t.Errorf("nonce %q is too short to be unguessable", nonce)
		}
		if seen[nonce] {
			t.Errorf("nonce %q served twice", nonce)
		}
		seen[nonce] = true
		if !strings.Contains(rec.Body.String(), ` nonce="`+nonce+`"`) {
			t.Errorf("the page does not carry its policy's nonce %q", nonce)
		}
		if strings.Contains(rec.Body.String(), noncePlaceholder) {
			t.Error("the page still has its nonce placeholder")
		}
	}
}

func TestIndexReferencesVersionedAssets(t *testing.T) {
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(string(Page("n")), -1)
	h := StaticHandler()
	served := 0
	for _, ref := range refs {
		if ref[1] == "data:," { // the empty favicon
			continue
		}
		if !strings.HasPrefix(ref[1], StaticPrefix) || !regexp.MustCompile(`\?v=[0-9a-f]{12}$`).MatchString(ref[1]) {
			t.Errorf("index.html refers to %q, not to a versioned asset under %s", ref[1], StaticPrefix)
			continue
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, ref[1], nil))
		if rec.Code != http.StatusOK || rec.Body.Len() == 0 {
			t.Errorf("GET %s: %d, %d bytes", ref[1], rec.Code, rec.Body.Len())
		}
		if cc := rec.Header().Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
			t.Errorf("GET %s: Cache-Control %q", ref[1], cc)
		}
		served++
	}
	if served != 5 {
		t.Errorf("index.html refers to %d assets, want 5 (xterm.js, xterm.css, addon-fit.js, share.js, share.css)", served)
	}
}

func TestStaticHandler(t *testing.T) {
	h := StaticHandler()
	shareJS := StaticPrefix + "share.js?v=" + assets["share.js"].version
	tests := []struct {
		name        string
		method      string
		path        string
		header      map[string]string
		code        int
		contentType string
		cache       string
	}{
		{name: "script", path: shareJS, code: http.StatusOK, contentType: "text/javascript; charset=utf-8", cache: "public, max-age=31536000, immutable"},
		{name: "style", path: StaticPrefix + "share.css", code: http.StatusOK, contentType: "text/css; charset=utf-8"},
		{name: "vendored", path: StaticPrefix + "vendor/xterm.js", code: http.StatusOK, contentType: "text/javascript; charset=utf-8"},
		{name: "license", path: StaticPrefix + "vendor/xterm.LICENSE", code: http.StatusOK, contentType: "text/plain; charset=utf-8"},
		{name: "head", method: http.MethodHead, path: shareJS, code: http.StatusOK, contentType: "text/javascript; charset=utf-8", cache: "public, max-age=31536000, immutable"},
		{name: "stale version", path: StaticPrefix + "share.js?v=000000000000", code: http.StatusOK, contentType: "text/javascript; charset=utf-8"},
		{name: "revalidation", path: StaticPrefix + "share.js", header: map[string]string{"If-None-Match": `"` + assets["share.js"].version + `"`}, code: http.StatusNotModified},
		{name: "listing", path: StaticPrefix, code: http.StatusNotFound},
		{name: "vendor listing", path: StaticPrefix + "vendor/", code: http.StatusNotFound},
		{name: "page", path: StaticPrefix + "index.html", code: http.StatusNotFound},
		{name: "missing", path: StaticPrefix + "nope.js", code: http.StatusNotFound},
		{name: "escape", path: StaticPrefix + "../web.go", code: http.StatusNotFound},
		{name: "post", method: http.MethodPost, path: shareJS, code: http.StatusNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			req := httptest.NewRequest(method, tc.path, nil)
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.code {
				t.Fatalf("%s %s: %d, want %d", method, tc.path, rec.Code, tc.code)
			}
			if tc.code != http.StatusOK {
				return
			}
			if ct := rec.Header().Get("Content-Type"); ct != tc.contentType {
				t.Errorf("Content-Type %q, want %q", ct, tc.contentType)
			}
			if cc := rec.Header().Get("Cache-Control"); cc != tc.cache {
				t.Errorf("Cache-Control %q, want %q", cc, tc.cache)
			}
			if etag := rec.Header().Get("ETag"); !regexp.MustCompile(`^"[0-9a-f]{12}"$`).MatchString(etag) {
				t.Errorf("ETag %q", etag)
			}
		})
	}
}

func TestFSHoldsThePageAndTheLicenses(t *testing.T) {
	for _, name := range []string{"index.html", "share.js", "share.css", "vendor/xterm.js", "vendor/xterm.css",
		"vendor/addon-fit.js", "vendor/xterm.LICENSE", "vendor/addon-fit.LICENSE"} {
		if b, err := fs.ReadFile(FS(), name); err != nil || len(b) == 0 {
			t.Errorf("%s: %d bytes, %v", name, len(b), err)
		}
	}
}
