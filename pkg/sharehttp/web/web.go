// Package web holds the share page: index.html, its script and style, and
// the xterm.js files vendored from npm by hack/update-web.sh, all embedded in
// the binary so that clusters without internet access serve them.
package web

import (
	"embed"
	"io/fs"
	"net/http"
)

// StaticPrefix is the path under which the page's assets are served. It
// carries no token, so assets can be fetched and cached alike for every link.
const StaticPrefix = "/_share/static/"

//go:embed static
var files embed.FS

var static = mustSub(files, "static")

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err)
	}
	return sub
}

// Index returns the page served at /s/<token>. It is the same for every link.
func Index() []byte {
	b, err := fs.ReadFile(static, "index.html")
	if err != nil {
		panic(err)
	}
	return b
}

// StaticHandler serves the page's assets under StaticPrefix, without
// directory listings.
func StaticHandler() http.Handler {
	fileServer := http.StripPrefix(StaticPrefix, http.FileServerFS(static))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.URL.Path[len(StaticPrefix)-1:]
		if info, err := fs.Stat(static, name[1:]); err != nil || info.IsDir() || name == "/index.html" {
			http.NotFound(w, r)
			return
		}
		fileServer.ServeHTTP(w, r)
	})
}
