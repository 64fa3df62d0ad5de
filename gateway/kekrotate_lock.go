package gateway

// One kek rotate at a time: an exclusive flock on a lock file beside the
// KEK file (two runs on one host), and a claim in the store's jobs table
// (store.JobClaimer; two hosts sharing the store), renewed while the
// rotation runs and given up when it ends.
//
// The claim is a lease: ClaimJob(job, owner, now, every) takes the job if
// nobody took it within every before now. Renewing and giving it up use
// the same call as a compare-and-set on the time of the last claim: with
// every = now - stamp, it succeeds only if the last claim is ours (made at
// stamp), since anybody else's is later.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tunnelhq/tunnel/pkg/store"
)

// kekRotateJob is the store's name of a KEK rotation (store.JobClaimer).
const kekRotateJob = "kek-rotate"

// kekRotateLease is how long a rotation's claim in the store holds without
// being renewed (it is renewed every third of it): how long a rotation
// killed on one host blocks a rerun on another.
const kekRotateLease = 30 * time.Second

// errRotationClaimLost stops a rotation whose claim in the store was taken
// by another run (it could not renew it in time).
var errRotationClaimLost = errors.New("this kek rotate lost its claim on the rotation in the store (it could not renew it in time, and another run took it over): nothing more was written; check that no other kek rotate is running, then run it again")

// rotationLockInfo is what the lock file holds while a rotation runs.
type rotationLockInfo struct {
	Owner string    `json:"owner"`
	PID   int       `json:"pid"`
	Since time.Time `json:"since"`
	// Stamp is the time of the rotation's last claim in the store, in
	// microseconds, for a rerun on this host to take over the claim of a
	// run that was killed.
	Stamp int64 `json:"stamp,omitempty"`
}

// rotationLock is a held rotation lock.
type rotationLock struct {
	f     *os.File
	jc    store.JobClaimer
	clock func() time.Time
	lease time.Duration
	info  rotationLockInfo

	mu    sync.Mutex
	stamp time.Time

	ctx    context.Context
	cancel context.CancelCauseFunc
	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

// lockRotation takes the rotation lock: the flock on lockPath (if not "")
// and the claim in st (if it can claim jobs). The returned context is
// cancelled if the claim is lost.
func lockRotation(ctx context.Context, cfg *KEKRotateConfig, st store.Store, lockPath string) (*rotationLock, error) {
	host, _ := os.Hostname()
	lk := &rotationLock{clock: cfg.Clock, lease: cfg.lease, stop: make(chan struct{})}
	if lk.lease <= 0 {
		lk.lease = kekRotateLease
	}
	lk.info = rotationLockInfo{Owner: fmt.Sprintf("kek-rotate %s/%d", host, os.Getpid()), PID: os.Getpid(), Since: cfg.Clock().UTC().Truncate(time.Second)}
	var prev rotationLockInfo
	if lockPath != "" {
		f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open the kek rotate lock %s: %w", lockPath, err)
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			defer f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				var other rotationLockInfo
				since := "an unknown time"
				if b, err := os.ReadFile(lockPath); err == nil && json.Unmarshal(b, &other) == nil && !other.Since.IsZero() {
					since = fmt.Sprintf("%s, pid %d on this host", other.Since.UTC().Format(time.RFC3339), other.PID)
				}
				return nil, fmt.Errorf("another kek rotate is running (since %s): wait for it to finish", since)
			}
			return nil, fmt.Errorf("lock %s: %w", lockPath, err)
		}
		lk.f = f
		// The lock file belongs to whoever owns the KEK file, so that a
		// later run as that user (not root) can open it.
		if fi, err := os.Stat(strings.TrimSuffix(lockPath, ".lock")); err == nil {
			if o, ok := fi.Sys().(*syscall.Stat_t); ok {
				f.Chown(int(o.Uid), int(o.Gid))
			}
		}
		// What a run that was killed on this host left (we hold the flock,
		// so it is no longer running).
		if b, err := os.ReadFile(lockPath); err == nil && len(b) > 0 {
			json.Unmarshal(b, &prev)
		}
	}
	lk.ctx, lk.cancel = context.WithCancelCause(ctx)
	lk.jc, _ = concrete(st).(store.JobClaimer)
	if lk.jc != nil {
		now := lk.now()
		ok, err := lk.jc.ClaimJob(ctx, kekRotateJob, lk.info.Owner, now, lk.lease)
		if err == nil && !ok && prev.Stamp != 0 {
			// Our own killed run's claim, if nobody claimed since.
			ok, err = lk.jc.ClaimJob(ctx, kekRotateJob, lk.info.Owner, now, now.Sub(time.UnixMicro(prev.Stamp)))
		}
		if err != nil {
			lk.cancel(context.Canceled)
			lk.unlock()
			return nil, fmt.Errorf("claim the rotation in the store: %w", storeError(err))
		}
		if !ok {
			lk.cancel(context.Canceled)
			lk.unlock()
			return nil, fmt.Errorf("another kek rotate is running (since a time this store does not say; it claimed the rotation in the store within the last %s, from another host sharing the store): wait for it to finish; if it was killed, run kek rotate again in %s", lk.lease, lk.lease)
		}
		lk.stamp = now
	}
	lk.write()
	if lk.jc != nil {
		lk.wg.Add(1)
		go lk.renew()
	}
	return lk, nil
}

// now is the clock in the store's precision (microseconds).
func (lk *rotationLock) now() time.Time {
	return lk.clock().Round(0).Truncate(time.Microsecond)
}

// write records the lock's holder (and its claim) in the lock file.
func (lk *rotationLock) write() {
	if lk.f == nil {
		return
	}
	lk.mu.Lock()
	info := lk.info
	if !lk.stamp.IsZero() {
		info.Stamp = lk.stamp.UnixMicro()
	}
	lk.mu.Unlock()
	b, _ := json.Marshal(info)
	lk.f.Truncate(0)
	lk.f.WriteAt(append(b, '\n'), 0)
	lk.f.Sync()
}

// renew renews the claim every third of the lease, until release; if
// another run took it, it cancels the rotation's context.
func (lk *rotationLock) renew() {
	defer lk.wg.Done()
	t := time.NewTicker(lk.lease / 3)
	defer t.Stop()
	for {
		select {
		case <-lk.stop:
			return
		case <-t.C:
		}
		lk.mu.Lock()
		prev := lk.stamp
		lk.mu.Unlock()
		now := lk.now()
		ok, err := lk.jc.ClaimJob(lk.ctx, kekRotateJob, lk.info.Owner, now, now.Sub(prev))
		if err != nil {
			// The store is unreachable: the rotation's own calls fail too.
			continue
		}
		if !ok {
			lk.cancel(errRotationClaimLost)
			return
		}
		lk.mu.Lock()
		lk.stamp = now
		lk.mu.Unlock()
		lk.write()
	}
}

// lost returns errRotationClaimLost if the claim was lost.
func (lk *rotationLock) lost() error {
	if errors.Is(context.Cause(lk.ctx), errRotationClaimLost) {
		return errRotationClaimLost
	}
	return nil
}

// release gives up the claim (if still ours) and the flock; safe twice.
func (lk *rotationLock) release() {
	lk.once.Do(func() {
		close(lk.stop)
		lk.wg.Wait()
		if lk.jc != nil && lk.lost() == nil {
			lk.mu.Lock()
			stamp := lk.stamp
			lk.mu.Unlock()
			// Set the last claim back to 1970, if it is still ours.
			epoch := time.Unix(0, 0)
			ctx, cancel := context.WithTimeout(context.WithoutCancel(lk.ctx), 10*time.Second)
			lk.jc.ClaimJob(ctx, kekRotateJob, lk.info.Owner, epoch, epoch.Sub(stamp))
			cancel()
		}
		lk.cancel(context.Canceled)
		lk.unlock()
	})
}

func (lk *rotationLock) unlock() {
	if lk.f == nil {
		return
	}
	lk.f.Truncate(0)
	lk.f.Sync()
	lk.f.Close()
	lk.f = nil
}
