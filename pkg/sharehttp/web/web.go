package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"regexp"
	"strings"
	"time"
)

// StaticPrefix is the path under which StaticHandler serves the page's
// assets. It carries no token.
const StaticPrefix = "/_share/static/"

// ContentSecurityPolicy is the policy the page is written for: scripts,
// styles and connections from the page's own origin only, no inline script
// or style, no framing. The listener may send a stricter one, not a looser
// one.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self' data:; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

//go:embed static
var files embed.FS

// asset is one file StaticHandler serves.
type asset struct {
	content []byte
	version string // a prefix of the content's SHA-256, in hex
}

var (
	static = mustSub(files, "static")
	assets = loadAssets(static)
	index  = versionReferences(mustRead(static, "index.html"), assets)
)

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err)
	}
	return sub
}

func mustRead(f fs.FS, name string) []byte {
	b, err := fs.ReadFile(f, name)
	if err != nil {
		panic(err)
	}
	return b
}

// loadAssets reads every embedded file but the page itself.
func loadAssets(f fs.FS) map[string]asset {
	out := map[string]asset{}
	err := fs.WalkDir(f, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || name == "index.html" {
			return err
		}
		b := mustRead(f, name)
		sum := sha256.Sum256(b)
		out[name] = asset{content: b, version: hex.EncodeToString(sum[:6])}
		return nil
	})
	if err != nil {
		panic(err)
	}
	return out
}

var assetReference = regexp.MustCompile(`"` + regexp.QuoteMeta(StaticPrefix) + `([^"?#]+)"`)

// versionReferences appends ?v=<version> to every reference of the page to
// an asset. A reference to a missing asset is a build error of the page.
func versionReferences(page []byte, assets map[string]asset) []byte {
	return assetReference.ReplaceAllFunc(page, func(ref []byte) []byte {
		name := string(ref[1+len(StaticPrefix) : len(ref)-1])
		a, ok := assets[name]
		if !ok {
			panic(fmt.Sprintf("index.html refers to %s%s, which is not embedded", StaticPrefix, name))
		}
		return []byte(`"` + StaticPrefix + name + "?v=" + a.version + `"`)
	})
}

// FS returns the embedded files: index.html at the root, and the assets
// StaticHandler serves, by their names under StaticPrefix.
func FS() fs.FS { return static }

// Index returns the page served at /s/<token>. It is the same for every
// link. Callers must not modify it.
func Index() []byte { return index }

// StaticHandler serves the page's assets under StaticPrefix: GET and HEAD
// of a file, never a listing or index.html. A request carrying the current
// version of the asset (as Index refers to it) may be cached for a year;
// others keep whatever Cache-Control the caller set. Every answer has a
// strong ETag, so revalidation costs a 304.
func StaticHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, ok := strings.CutPrefix(r.URL.Path, StaticPrefix)
		a, found := assets[name]
		if !ok || !found || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("ETag", `"`+a.version+`"`)
		if r.URL.Query().Get("v") == a.version {
			h.Set("Cache-Control", "public, max-age=31536000, immutable")
		}
		http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(a.content))
	})
}
