package web

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func TestIndexReferencesOnlyEmbeddedAssets(t *testing.T) {
	page := string(Index())
	if regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`).MatchString(page) || strings.Contains(page, "<style") || strings.Contains(page, " style=") || strings.Contains(page, " on") && regexp.MustCompile(`\son[a-z]+=`).MatchString(page) {
		t.Error("index.html has inline script or style, which the CSP forbids")
	}
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(refs) < 5 {
		t.Fatalf("index.html references %d assets", len(refs))
	}
	h := StaticHandler()
	for _, ref := range refs {
		if !strings.HasPrefix(ref[1], StaticPrefix) {
			t.Errorf("index.html references %q outside %s", ref[1], StaticPrefix)
			continue
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, ref[1], nil))
		if rec.Code != http.StatusOK || rec.Body.Len() == 0 {
			t.Errorf("GET %s: %d, %d bytes", ref[1], rec.Code, rec.Body.Len())
		}
	}
}

func TestStaticHandlerServesNoListingsOrIndex(t *testing.T) {
	h := StaticHandler()
	for _, path := range []string{StaticPrefix, StaticPrefix + "vendor/", StaticPrefix + "index.html", StaticPrefix + "nope.js", StaticPrefix + "../web.go"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, StaticPrefix+"share.js", nil))
	if ct := rec.Header().Get("Content-Type"); !strings.Contains(ct, "javascript") {
		t.Errorf("share.js served as %q", ct)
	}
}
