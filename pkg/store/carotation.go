package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
)

// CARotationStore changes the cluster's CA keys during a rotation
// (docs/CA-ROTATION.md): a new key of a kind is added inactive (trusted,
// not signing), then made the active one, then the old one is removed.
// Each step appends its audit event in the same transaction and emits a
// ChangeCA, so that every gateway sharing the store reloads its CA keys.
type CARotationStore interface {
	// AddCAKey stores k (k.Active is ignored: the key is stored inactive)
	// and appends ev. A kind may have one rotation under way at a time: if
	// an inactive key of k.Kind is stored already (one started, or an old
	// one not removed yet) the result is ErrExists and nothing is stored.
	AddCAKey(ctx context.Context, k CAKey, ev audit.Event) error
	// ActivateCAKey makes the key of kind whose Public is public the active
	// one (every other key of kind becomes inactive), records at as the
	// kind's activation time (CAActivatedMeta) and appends ev. An unknown
	// key gives ErrNotFound; activating the active key again changes
	// nothing but still appends ev.
	ActivateCAKey(ctx context.Context, kind string, public []byte, at time.Time, ev audit.Event) error
	// RemoveCAKey removes the inactive key of kind whose Public is public
	// and appends ev. An unknown key gives ErrNotFound; the active key is
	// never removed (a plain error).
	RemoveCAKey(ctx context.Context, kind string, public []byte, ev audit.Event) error
	// LatestCertExpiry returns the latest NotAfter of the certificates of
	// kind issued at or before issuedBefore and not revoked, zero if none.
	LatestCertExpiry(ctx context.Context, kind CertKind, issuedBefore time.Time) (time.Time, error)
	// CountValidCerts counts the certificates of kind issued at or before
	// issuedBefore, not revoked and still valid at now.
	CountValidCerts(ctx context.Context, kind CertKind, issuedBefore, now time.Time) (int, error)
}

// ChangeCA: a CA key was added, activated or removed. ID is its kind.
const ChangeCA ChangeKind = "ca"

// CAActivatedMeta is the meta key (GetMeta) holding the time, RFC 3339 with
// nanoseconds, at which the active key of kind was made active by a
// rotation; absent for a kind never rotated.
func CAActivatedMeta(kind string) string { return "ca_activated/" + kind }

// CAEpochMeta is the meta key (GetMeta) holding the CA epoch: a decimal
// number that AddCAKey, ActivateCAKey and RemoveCAKey each move on in
// their transaction, so that of two trust bundles the one with the higher
// epoch was made from newer keys (an agent refuses a bundle older than the
// one it holds). Each step sets it to the previous epoch plus one or to
// its audit event's time in microseconds since 1970, whichever is higher:
// a store restored from an older backup moves past the epochs agents hold
// at its first step, as clocks go forward. Absent, it is 0: no key
// changed since Initialize.
const CAEpochMeta = "ca_epoch"

// ReadCAKeys returns every CA key and the CA epoch they belong to. The
// epoch is read first: the keys returned are at least as new as it, so a
// bundle labelled with it is never newer than its label says.
func ReadCAKeys(ctx context.Context, st interface {
	GetMeta(ctx context.Context, key string) (string, error)
	CAKeys(ctx context.Context) ([]CAKey, error)
}) ([]CAKey, uint64, error) {
	var epoch uint64
	v, err := st.GetMeta(ctx, CAEpochMeta)
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return nil, 0, err
	default:
		if epoch, err = strconv.ParseUint(v, 10, 64); err != nil {
			return nil, 0, fmt.Errorf("the stored CA epoch %q is not a number: %w", v, err)
		}
	}
	keys, err := st.CAKeys(ctx)
	if err != nil {
		return nil, 0, err
	}
	return keys, epoch, nil
}

// CAPhase is where a kind's rotation stands.
type CAPhase string

// Phases of a rotation, per kind.
const (
	// CAIdle: one key, active.
	CAIdle CAPhase = "idle"
	// CAStarted: a new key is trusted alongside the active (old) one, not
	// signing yet.
	CAStarted CAPhase = "started"
	// CAActivated: the new key signs; the old one is still trusted until
	// finish removes it.
	CAActivated CAPhase = "activated"
)

// CARotationOf sorts the keys of kind: the active key, the inactive key
// newer than it (the rotation's new key, started), and the inactive keys
// older than it (the old ones, kept until finish). ok is false when the
// kind has no active key.
func CARotationOf(keys []CAKey, kind string) (active CAKey, pending *CAKey, old []CAKey, phase CAPhase, ok bool) {
	for _, k := range keys {
		if k.Kind == kind && k.Active {
			active, ok = k, true
		}
	}
	if !ok {
		return CAKey{}, nil, nil, CAIdle, false
	}
	for _, k := range keys {
		if k.Kind != kind || k.Active {
			continue
		}
		if k.CreatedAt.After(active.CreatedAt) {
			k := k
			pending = &k
		} else if !bytes.Equal(k.Public, active.Public) {
			old = append(old, k)
		}
	}
	switch {
	case pending != nil:
		phase = CAStarted
	case len(old) > 0:
		phase = CAActivated
	default:
		phase = CAIdle
	}
	return active, pending, old, phase, true
}
