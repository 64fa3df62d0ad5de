package apiserver

import (
	"crypto/x509"
	"net/http"
	"runtime/debug"

	"github.com/tunnelhq/tunnel/gateway/internal/webui"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/panics"
)

// anonymousPatterns are the routes that serve callers without a
// certificate: every request to them is charged to its source's budget.
var anonymousPatterns = map[string]bool{
	"GET " + api.PathPing:    true,
	"GET " + api.PathCA:      true,
	"POST " + api.PathLogin:  true,
	"POST " + api.PathEnroll: true,
	"/":                      true, // unknown paths
}

// limitAnonymous charges anonymous requests to s.Limiter before any work
// is done for them: every request to an anonymous route, and a request to
// any other route unless it carries a client certificate of the cluster
// CA, valid now (such a caller is then verified in full by the handler).
// Over the limit, the answer is 429 with Retry-After; nothing is read
// from or written to the store.
func (s *Server) limitAnonymous(mux *http.ServeMux) http.Handler {
	if s.Limiter == nil {
		return mux
	}
	limited := s.Limiter.Middleware(mux, remoteAddr)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); !anonymousPatterns[pattern] && s.certified(r) {
			mux.ServeHTTP(w, r)
			return
		}
		limited.ServeHTTP(w, r)
	})
}

// certified reports whether r carries a client certificate that chains to
// the cluster CA and is valid now: only the gateway issues those, so its
// holder is no anonymous caller (revocation and locks are checked later,
// by the handler). A web console cookie that opens (sealed by a gateway
// of the cluster, within its lifetime) counts the same: one AES-GCM open,
// no store read; the handler verifies the certificate it carries in full.
func (s *Server) certified(r *http.Request) bool {
	chain := peerChain(r)
	if len(chain) == 0 {
		return s.consoleCookie(r)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: s.CA.X509Pool(), Intermediates: inter, CurrentTime: s.now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	return err == nil
}

// recoverPanics keeps a panic in a handler to its request: it is logged
// with its stack and counted (pkg/panics), and answered as an internal
// error if nothing was sent yet; otherwise the connection is cut, so the
// client cannot take a partial answer for a whole one.
func (s *Server) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hw := &headerWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			panics.Report(s.log(), "API request "+r.Method+" "+r.URL.Path, v, debug.Stack())
			if hw.wrote {
				panic(http.ErrAbortHandler)
			}
			writeError(w, &api.Error{Code: api.CodeInternal,
				Message: "the gateway hit an internal error answering this request (see the gateway log); try again"}, http.StatusInternalServerError)
		}()
		next.ServeHTTP(hw, r)
	})
}

// headerWriter notes whether the header was sent.
type headerWriter struct {
	http.ResponseWriter
	wrote bool
}

func (w *headerWriter) WriteHeader(code int) {
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
}

func (w *headerWriter) Write(p []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *headerWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// consoleCookie reports whether r carries a web console cookie that opens.
func (s *Server) consoleCookie(r *http.Request) bool {
	if s.Sealer == nil {
		return false
	}
	c, err := r.Cookie(webui.CookieName)
	if err != nil {
		return false
	}
	_, err = webui.Open(s.Sealer, c.Value, s.now())
	return err == nil
}
