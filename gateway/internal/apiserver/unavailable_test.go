package apiserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/gateway/internal/login"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// TestStoreUnavailableIsOne503: whenever the store could not be reached
// during a request and the answer would be a server error — the error says
// so, or a store call noted it and the handler wrapped it into something
// else — the answer is 503 "the gateway cannot reach its store" (clients
// fail over on it), without the cause (it may name the database host).
// Refusals (4xx) and other internal errors are left alone.
func TestStoreUnavailableIsOne503(t *testing.T) {
	cause := fmt.Errorf("PostgreSQL unavailable: dial tcp 10.9.8.7:5432: connection refused: %w", store.ErrUnavailable)
	tests := []struct {
		name     string
		noted    bool
		err      error
		wantCode int
		wantMsg  string
	}{
		{"the error says so", false, fmt.Errorf("list users: %w", cause), 503, "the gateway cannot reach its store: "},
		{"wrapped into an internal error", true, errors.New("sign the certificate: lost the audit row"), 503, "the gateway cannot reach its store: "},
		{"a login error 500", true, &login.Error{Status: 500, Code: api.CodeInternal, Message: "login failed"}, 503, "the gateway cannot reach its store: "},
		{"a refusal stays", true, &login.Error{Status: 401, Code: api.CodeInvalidCredentials, Message: "wrong password or code"}, 401, "wrong password or code"},
		{"a 404 stays", true, notFound("no user named bob"), 404, "no user named bob"},
		{"other internal errors stay", false, errors.New("boom"), 500, "internal error"},
	}
	s := &Server{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec *httptest.ResponseRecorder
			h := noteStore(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.noted {
					_ = store.NoteUnavailable(r.Context(), cause)
				}
				s.fail(w, r, tt.err)
			}))
			rec = httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/x", nil))
			var e api.Error
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
				t.Fatalf("body %q: %v", rec.Body.String(), err)
			}
			if rec.Code != tt.wantCode || !strings.Contains(e.Message, tt.wantMsg) {
				t.Errorf("answer %d %q; want %d with %q", rec.Code, e.Message, tt.wantCode, tt.wantMsg)
			}
			if tt.wantCode == 503 && (e.Code != api.CodeStoreUnavailable || rec.Header().Get("Retry-After") == "") {
				t.Errorf("503 answer: code %q, Retry-After %q; want %q and a Retry-After", e.Code, rec.Header().Get("Retry-After"), api.CodeStoreUnavailable)
			}
			if strings.Contains(rec.Body.String(), "10.9.8.7") {
				t.Errorf("the answer names the database host: %s", rec.Body.String())
			}
		})
	}
}
