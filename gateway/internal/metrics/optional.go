package metrics

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// The optional interfaces of a store (callers type-assert them): Store
// forwards each to the store it wraps, timed, so that wrapping a store
// hides nothing it can do. A call the wrapped store does not implement
// fails with errNotImplemented. A new optional interface needs its
// forwarder here: TestConformance (the storetest suite over a wrapped
// store) fails until it has one.

var (
	_ store.Store       = (*Store)(nil)
	_ store.Snapshotter = (*Store)(nil)
	_ store.SealedStore = (*Store)(nil)
	_ store.JobClaimer  = (*Store)(nil)
)

func errNotImplemented(st store.Store, what string) error {
	return fmt.Errorf("this store (%T) cannot %s", st, what)
}

// Snapshot is store.Snapshotter's, timed.
func (s *Store) Snapshot(ctx context.Context, w io.Writer) (store.SnapshotInfo, error) {
	sn, ok := s.Store.(store.Snapshotter)
	if !ok {
		return store.SnapshotInfo{}, errNotImplemented(s.Store, "take snapshots")
	}
	start := time.Now()
	info, err := sn.Snapshot(ctx, w)
	s.observe("snapshot", start, err)
	return info, err
}

// SealedRefs is store.SealedStore's, timed.
func (s *Store) SealedRefs(ctx context.Context) ([]store.SealedRef, error) {
	ss, ok := s.Store.(store.SealedStore)
	if !ok {
		return nil, errNotImplemented(s.Store, "list sealed values")
	}
	start := time.Now()
	refs, err := ss.SealedRefs(ctx)
	s.observe("sealed_refs", start, err)
	return refs, err
}

// GetSealed is store.SealedStore's, timed.
func (s *Store) GetSealed(ctx context.Context, ref store.SealedRef) ([]byte, error) {
	ss, ok := s.Store.(store.SealedStore)
	if !ok {
		return nil, errNotImplemented(s.Store, "read sealed values")
	}
	start := time.Now()
	v, err := ss.GetSealed(ctx, ref)
	s.observe("get_sealed", start, err)
	return v, err
}

// ReplaceSealed is store.SealedStore's, timed.
func (s *Store) ReplaceSealed(ctx context.Context, ref store.SealedRef, old, sealed []byte) error {
	ss, ok := s.Store.(store.SealedStore)
	if !ok {
		return errNotImplemented(s.Store, "replace sealed values")
	}
	start := time.Now()
	err := ss.ReplaceSealed(ctx, ref, old, sealed)
	s.observe("replace_sealed", start, err)
	return err
}

// SetKeyBackend is store.SealedStore's, timed.
func (s *Store) SetKeyBackend(ctx context.Context, backend string, ev audit.Event) error {
	ss, ok := s.Store.(store.SealedStore)
	if !ok {
		return errNotImplemented(s.Store, "record the key backend")
	}
	start := time.Now()
	err := ss.SetKeyBackend(ctx, backend, ev)
	s.observe("set_key_backend", start, err)
	return err
}

// ClaimJob is store.JobClaimer's, timed.
func (s *Store) ClaimJob(ctx context.Context, job, owner string, now time.Time, every time.Duration) (bool, error) {
	jc, ok := s.Store.(store.JobClaimer)
	if !ok {
		return false, errNotImplemented(s.Store, "claim jobs")
	}
	start := time.Now()
	claimed, err := jc.ClaimJob(ctx, job, owner, now, every)
	s.observe("claim_job", start, err)
	return claimed, err
}
