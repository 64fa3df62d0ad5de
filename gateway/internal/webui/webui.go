// Package webui is the gateway's web console: its browser side (HTML, CSS
// and our own JavaScript modules, plus @xterm/headless from the npm registry,
// copied by `make ui`), embedded in the binary, and the console's session
// cookie and request checks (session.go). The HTTP routes live in package
// apiserver (console.go), which serves these assets under /ui/ on the API
// port and lets the console's cookie stand in for a client certificate.
//
// The browser code calls the gateway's JSON API (/v1/...) and nothing
// else: no third-party origin, no inline script or style, so that the
// Content-Security-Policy below holds.
package webui

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// Assets is the console's files, index.html at the root.
func Assets() fs.FS {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the directory is embedded: cannot happen
	}
	return sub
}

// CSP is the Content-Security-Policy of every console answer: only the
// gateway's own scripts, styles, images and API; no plugins, no framing,
// no <base>, forms only to the gateway.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// SetSecurityHeaders sets the headers of every console answer (pages,
// assets, and API answers to a console caller).
func SetSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
}
