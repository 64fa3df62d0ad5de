package gateway

import (
	"encoding/json"
	"net/http"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// storeUnavailable answers 503 "the gateway cannot reach its store: ..."
// instead of an internal error when a store call of the request failed
// because the store could not be reached (store.NoteUnavailable), however
// the handler wrapped the error on the way.
func storeUnavailable(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, note := store.WithUnavailableNote(r.Context())
		next.ServeHTTP(&unavailableWriter{ResponseWriter: w, note: note}, r.WithContext(ctx))
	})
}

type unavailableWriter struct {
	http.ResponseWriter
	note     *store.UnavailableNote
	replaced bool
}

func (u *unavailableWriter) WriteHeader(code int) {
	if code == http.StatusInternalServerError {
		if err := u.note.Err(); err != nil {
			u.replaced = true
			h := u.ResponseWriter.Header()
			h.Set("Content-Type", "application/json")
			h.Set("Cache-Control", "no-store")
			h.Set("Retry-After", "5")
			h.Del("Content-Length")
			u.ResponseWriter.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(u.ResponseWriter).Encode(api.Error{Code: api.CodeStoreUnavailable, RetryAfter: 5,
				Message: "the gateway cannot reach its store: " + err.Error() + "; nothing was changed, try again shortly"})
			return
		}
	}
	u.ResponseWriter.WriteHeader(code)
}

func (u *unavailableWriter) Write(b []byte) (int, error) {
	if u.replaced {
		return len(b), nil // the handler's internal error, replaced
	}
	return u.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (u *unavailableWriter) Unwrap() http.ResponseWriter { return u.ResponseWriter }
