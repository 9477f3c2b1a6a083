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
	page := string(Index())
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
}

func TestIndexReferencesVersionedAssets(t *testing.T) {
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(string(Index()), -1)
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
