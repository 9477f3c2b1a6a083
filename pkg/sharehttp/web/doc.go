// Package web holds the share page: index.html, share.js and share.css, and
// xterm.js with its fit addon, vendored from npm by hack/update-web.sh. All
// are embedded in the binary, so that clusters without internet access
// serve them and no CDN sees who opens a link.
//
// The page is the same for every link: the listener serves Index at
// /s/<token>, and the page finds its API (/s/<token>/info and
// /s/<token>/terminal) from its own location. Its assets live under the
// fixed StaticPrefix, which carries no token, so they are fetched and
// cached alike for every link; Index refers to them with a version query
// (?v=<content hash>) so that a cached copy never outlives an upgrade.
//
// The page works under the listener's strict Content-Security-Policy
// (ContentSecurityPolicy): no inline script or style. The wire protocol
// the page speaks is specified in docs/wire-protocol.md.
package web
