package web

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
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

// ContentSecurityPolicy is the policy of every response but the page:
// scripts, styles and connections from the listener's own origin only, no
// inline script or style, no framing. The page itself is served with
// PageContentSecurityPolicy, which differs only in style-src.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self' data:; font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// PageContentSecurityPolicy is the policy of one response of the page:
// ContentSecurityPolicy, but that <style> elements carrying nonce are
// applied too.
//
// xterm.js styles its rows, colours, cursor, selection and scroll bar
// through <style> elements it creates and rewrites as it runs (four places
// in xterm.js 6: the DOM renderer's theme and dimensions, the viewport and
// its scroll bar). Their text depends on the font, the window and the
// theme, so no fixed set of hashes allows them, and 'unsafe-inline' would
// allow any <style> an injected fragment of HTML brought. A nonce allows
// exactly the elements the page's own script marks: share.js reads it from
// the page and sets it on each <style> that document.createElement makes.
// Markup cannot carry it without knowing it, and it is fresh and
// unguessable for each response, which Cache-Control: no-store keeps from
// being served twice. Style attributes stay refused (a nonce never allows
// one): share.js turns xterm.js's setAttribute('style', …) for 24-bit
// colours into element.style, which the policy does not govern. script-src
// is unchanged: no nonce, no inline script.
func PageContentSecurityPolicy(nonce string) string {
	return strings.Replace(ContentSecurityPolicy, "style-src 'self';", "style-src 'self' 'nonce-"+nonce+"';", 1)
}

// NewNonce returns a nonce for one response of the page: 144 bits from
// crypto/rand in unpadded base64url, which CSP's nonce grammar and an HTML
// attribute both take as is.
func NewNonce() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b) // never fails: crypto/rand crashes the program rather than return an error
	return base64.RawURLEncoding.EncodeToString(b)
}

//go:embed static
var files embed.FS

// asset is one file StaticHandler serves.
type asset struct {
	content []byte
	version string // a prefix of the content's SHA-256, in hex
}

// noncePlaceholder marks in index.html where each response's nonce goes.
const noncePlaceholder = "{{nonce}}"

var (
	static = mustSub(files, "static")
	assets = loadAssets(static)
	index  = mustHavePlaceholder(versionReferences(mustRead(static, "index.html"), assets))
)

func mustHavePlaceholder(page []byte) []byte {
	if n := bytes.Count(page, []byte(noncePlaceholder)); n != 1 {
		panic(fmt.Sprintf("index.html has %d nonce placeholders, want 1", n))
	}
	return page
}

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

// Page returns the page served at /s/<token> with nonce, the one its
// response's Content-Security-Policy names. It is otherwise the same for
// every link and every response.
func Page(nonce string) []byte {
	return bytes.Replace(index, []byte(noncePlaceholder), []byte(nonce), 1)
}

// WritePage answers with the page and status code: a fresh nonce, the
// page's Content-Security-Policy with it, and Cache-Control: no-store, so
// that no cache serves a nonce twice.
func WritePage(w http.ResponseWriter, code int) {
	nonce := NewNonce()
	h := w.Header()
	h.Set("Content-Security-Policy", PageContentSecurityPolicy(nonce))
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(Page(nonce))
}

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
