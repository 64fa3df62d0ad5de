package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// TestStoreUnavailableAnswers503: an internal error of a request during
// which the store could not be reached is answered 503 "the gateway cannot
// reach its store: ..."; other internal errors are left alone.
func TestStoreUnavailableAnswers503(t *testing.T) {
	h := storeUnavailable(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/down" {
			err := fmt.Errorf("reserve login attempt: %w", fmt.Errorf("PostgreSQL unavailable: connection refused: %w", store.ErrUnavailable))
			_ = store.NoteUnavailable(r.Context(), err)
		}
		w.WriteHeader(500)
		fmt.Fprintln(w, `{"code":"internal","message":"the gateway hit an internal error"}`)
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/down", nil))
	var e api.Error
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
		t.Fatalf("body %q: %v", rec.Body.String(), err)
	}
	if rec.Code != 503 || e.Code != api.CodeStoreUnavailable || !strings.HasPrefix(e.Message, "the gateway cannot reach its store: ") ||
		!strings.Contains(e.Message, "connection refused") {
		t.Errorf("answer %d %+v; want 503 saying the gateway cannot reach its store", rec.Code, e)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/other", nil))
	if rec.Code != 500 || !strings.Contains(rec.Body.String(), "internal error") {
		t.Errorf("another internal error became %d %q", rec.Code, rec.Body.String())
	}
}
