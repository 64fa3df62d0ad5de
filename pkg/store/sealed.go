package store

import (
	"context"
	"errors"

	"github.com/tunnelhq/tunnel/pkg/audit"
)

// Kinds of sealed values (SealedRef.Kind).
const (
	SealedCAKey     = "ca"        // a CA private key, label "ca/<kind>"
	SealedTOTP      = "totp"      // a user's TOTP secret, label "totp/<name>"
	SealedRecording = "recording" // a session recording, label "recording/<id>"
)

// ErrChanged is returned by ReplaceSealed when the value is no longer the
// one the caller read: read it again.
var ErrChanged = errors.New("the sealed value changed meanwhile")

// SealedRef names one value sealed with the KEK (pkg/seal) in the store.
type SealedRef struct {
	Kind string
	// Key is the row: the CA key's id, the user's name, the session id.
	Key string
	// Label is the seal label the value is bound to.
	Label string
}

// SealedStore lists and replaces every value the store holds sealed with
// the KEK, for tunnel-gateway kek rotate. Both stores implement it;
// callers type-assert.
type SealedStore interface {
	// SealedRefs returns every sealed value's reference. CA keys held
	// elsewhere (Vault references) are not sealed values and are left out.
	SealedRefs(ctx context.Context) ([]SealedRef, error)
	// GetSealed returns the sealed value ref names (ErrNotFound if gone).
	GetSealed(ctx context.Context, ref SealedRef) ([]byte, error)
	// ReplaceSealed replaces the value ref names with sealed if it is
	// still old (compare-and-swap): ErrChanged if it is not, ErrNotFound
	// if it is gone. It appends no event and emits no change.
	ReplaceSealed(ctx context.Context, ref SealedRef, old, sealed []byte) error
	// SetKeyBackend records where the cluster's keys live, the meta key
	// KeyBackendMeta ("vault"; "" for a KEK file), and appends ev, in one
	// transaction (tunnel-gateway vault import, once every value is
	// moved).
	SetKeyBackend(ctx context.Context, backend string, ev audit.Event) error
}

// KeyBackendMeta is the meta key (GetMeta) that says where the cluster's
// keys live: "vault" (Transit keys), or missing for a KEK file.
const KeyBackendMeta = "key_backend"
