package apiserver

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// Join tokens: "tjt_" and 32 random bytes in unpadded base64url. The store
// keeps only the hex SHA-256 of the whole string.
const (
	tokenPrefix     = "tjt_"
	DefaultTokenTTL = 30 * time.Minute
	MaxTokenTTL     = 24 * time.Hour
)

// newJoinToken returns a new token and its hash.
func newJoinToken() (token, hash string, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", "", fmt.Errorf("make join token: %w", err)
	}
	token = tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	return token, hashToken(token), nil
}

// hashToken is what the store keeps of a token.
func hashToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// tokenID names a token in the audit log and in logs without revealing
// it: the start of its hash.
func tokenID(hash string) string { return hash[:12] }

func (s *Server) handleCreateToken(w http.ResponseWriter, r *http.Request) {
	var req api.CreateTokenRequest
	if err := api.Decode(r.Body, &req); err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	name := identity.CanonicalName(req.Agent)
	if err := identity.ValidateName("agent", name); err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	ttl := time.Duration(req.TTL)
	switch {
	case ttl == 0:
		ttl = DefaultTokenTTL
	case ttl < time.Minute:
		s.fail(w, r, badRequest(fmt.Sprintf("token TTL %s is shorter than a minute", ttl)))
		return
	case ttl > MaxTokenTTL:
		s.fail(w, r, &httpError{400, api.CodeTTLTooLong, fmt.Sprintf("token TTL %s exceeds the maximum of %s: a join token should be used soon after it is made", ttl, MaxTokenTTL)})
		return
	}
	// A token for a locked agent could never be used: say so now rather
	// than when the agent tries.
	a, err := s.Store.GetAgent(r.Context(), name)
	switch {
	case err == nil && a.Locked:
		s.fail(w, r, conflict(fmt.Sprintf("agent %s is locked: unlock it first with tunnel admin agents unlock %s", name, name)))
		return
	case err != nil && !errors.Is(err, store.ErrNotFound):
		s.fail(w, r, err)
		return
	}
	token, hash, err := newJoinToken()
	if err != nil {
		s.fail(w, r, err)
		return
	}
	now := s.now()
	t := store.JoinToken{Hash: hash, Agent: name, CreatedBy: callerFrom(r.Context()).user.Name,
		CreatedAt: now, ExpiresAt: now.Add(ttl)}
	ev := s.adminEvent(r, audit.TokenCreated, name)
	ev.Details = map[string]string{"token_id": tokenID(hash), "expires_at": t.ExpiresAt.UTC().Format(time.RFC3339)}
	if err := s.Store.CreateJoinToken(r.Context(), t, ev); err != nil {
		s.fail(w, r, storeError(err, "create join token for "+name))
		return
	}
	writeJSON(w, http.StatusCreated, api.Token{Token: token, Agent: name, ExpiresAt: t.ExpiresAt})
}
