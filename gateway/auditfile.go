package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/panics"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// The audit log file (--audit-log FILE, docs/AUDIT-EXPORT.md): every
// event committed to the store, by any gateway of the cluster, appended to
// FILE as one JSON object per line, in log order, for log shippers
// (Vector, Fluent Bit, Filebeat...).
//
// One goroutine, owned by the gateway (started with the heartbeat, ended
// and waited for by Close), follows the store: it reads the events after
// the last one written, every AuditFilePoll, and appends them. Where to
// start is read from the file itself at start: the seq and hash of its
// last complete line. So a restart neither repeats nor skips an event; a
// partial last line (a crash mid-write) is cut off and written again
// whole, and a write that fails half-way (a full disk) is cut back to the
// last whole line before it is retried. If FILE is empty at start (rotated
// while the gateway was down), FILE.pos (the position written last, kept
// next to FILE) says where to go on, or else the last line of FILE.1;
// with none of them, the export starts at the first event of the log.
//
// The resume point is checked against the store: if the store no longer
// holds that event (restored from an older backup) or holds another one
// there, the export goes on after the last line of the file the store
// agrees with, after a marker line of type markerType saying so.
//
// FILE is opened without following a symlink and must be a regular file
// owned by the gateway's user whose last line is an audit event (or a
// marker) before anything is cut off or its mode changed; it is created
// 0600 (and made 0600 if it was not). It is reopened on SIGHUP, and when
// FILE no longer is the file written to (moved or removed by a rotation),
// checked at every poll: a rotated file gets no further line, the new
// FILE takes over from the next event.

// AuditFilePoll is how often the audit log file follows the store.
const AuditFilePoll = 500 * time.Millisecond

// auditFileBatch bounds the events read and written at a time.
const auditFileBatch = 1000

// markerType is the type of the line written when the file and the store
// disagree at start (docs/AUDIT-EXPORT.md).
const markerType = "audit_export.discontinuity"

// maxAgreementChecks bounds the lines of the file compared with the store
// when looking for where they agree; past it the export restarts at the
// first event of the store.
const maxAgreementChecks = 1000

// position is a point of the export: the seq and hash of the last event
// written (0 and "" before the first).
type position struct {
	Seq  int64  `json:"seq"`
	Hash string `json:"hash"`
}

type auditFile struct {
	path  string
	store store.Store
	log   *slog.Logger
	poll  time.Duration

	f        *os.File
	last     int64  // seq of the last event written
	lastHash string // its hash

	// cut, when set, is the size to cut the file back to before the next
	// write: a failed write left a fragment that could not be cut off then.
	cut int64
	// reopenFailing and posFailing make a streak of failures log once.
	reopenFailing bool
	posFailing    bool
	// writeTo writes to the file (a test replaces it to fail half-way).
	writeTo func(f *os.File, b []byte) (int, error)
}

// openAuditFile opens (or creates) path and finds where the export
// resumes, checking it against the store.
func openAuditFile(path string, st store.Store, log *slog.Logger) (*auditFile, error) {
	af := &auditFile{path: path, store: st, log: log, poll: AuditFilePoll, cut: -1,
		writeTo: func(f *os.File, b []byte) (int, error) { return f.Write(b) }}
	f, err := openPrivate(path)
	if err != nil {
		return nil, fmt.Errorf("--audit-log: %w", err)
	}
	pos, err := resumePosition(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("--audit-log %s: %w", path, err)
	}
	af.f = f
	if pos.Seq == 0 {
		pos = af.savedPosition()
	}
	af.last, af.lastHash = pos.Seq, pos.Hash
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := af.reconcile(ctx); err != nil {
		f.Close()
		return nil, fmt.Errorf("--audit-log %s: %w", path, err)
	}
	return af, nil
}

// openPrivate opens path for appending (creating it 0600) without
// following a symlink, and checks that it is a regular file of the
// gateway's user. It changes nothing in an existing file.
func openPrivate(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s is a symbolic link: give the path of the file itself", path)
		}
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file: give the path of a file only the gateway writes to", path)
	}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		f.Close()
		return nil, fmt.Errorf("%s belongs to user id %d, not to the gateway's (%d): give a file only the gateway writes to", path, sys.Uid, os.Geteuid())
	}
	return f, nil
}

// resumePosition returns the position of the last complete line of f
// (zero if none), checked to be an audit event or a marker before the
// partial last line, if any, is cut off and f made 0600.
func resumePosition(f *os.File) (position, error) {
	fi, err := f.Stat()
	if err != nil {
		return position{}, err
	}
	size := fi.Size()
	end, err := lastNewline(f, size)
	if err != nil {
		return position{}, err
	}
	var pos position
	if end > 0 {
		if pos, err = lastPosition(f, end); err != nil {
			return position{}, err
		}
	} else if size > 0 {
		// A crash in the middle of the first write leaves the start of
		// an event or marker; anything else is another program's.
		head := make([]byte, min(size, 16))
		if _, err := f.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
			return position{}, err
		}
		if !bytes.HasPrefix([]byte(`{"seq":`), head) && !bytes.HasPrefix(head, []byte(`{"seq":`)) &&
			!bytes.HasPrefix([]byte(`{"type":`), head) && !bytes.HasPrefix(head, []byte(`{"type":`)) {
			return position{}, fmt.Errorf("it holds %d bytes and no complete line, not the start of an audit event: give a file only the gateway writes to", size)
		}
	}
	if end < size { // a partial line after the last newline
		if err := f.Truncate(end); err != nil {
			return position{}, fmt.Errorf("cut off the partial last line: %w", err)
		}
	}
	if err := f.Chmod(0o600); err != nil {
		return position{}, fmt.Errorf("make it private (0600): %w", err)
	}
	return pos, nil
}

// lastNewline returns the offset just after the last '\n' of r's first
// size bytes (0 if there is none).
func lastNewline(r io.ReaderAt, size int64) (int64, error) {
	buf := make([]byte, 64<<10)
	for pos := size; pos > 0; {
		n := min(int64(len(buf)), pos)
		pos -= n
		if _, err := r.ReadAt(buf[:n], pos); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			return pos + int64(i) + 1, nil
		}
	}
	return 0, nil
}

// eachLineBack calls fn with each non-blank line of r's first end bytes,
// last first, until fn returns true.
func eachLineBack(r io.ReaderAt, end int64, fn func(line []byte) bool) error {
	buf := make([]byte, 64<<10)
	var carry []byte // the start of a line whose beginning is not read yet
	for pos := end; pos > 0; {
		n := min(int64(len(buf)), pos)
		pos -= n
		if _, err := r.ReadAt(buf[:n], pos); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		data := append(append([]byte(nil), buf[:n]...), carry...)
		for {
			i := bytes.LastIndexByte(data, '\n')
			if i < 0 {
				break
			}
			if line := data[i+1:]; len(bytes.TrimSpace(line)) > 0 && fn(line) {
				return nil
			}
			data = data[:i]
		}
		if len(data) > 16<<20 {
			return errors.New("it has a line longer than 16 MiB: give a file only the gateway writes to")
		}
		carry = data
	}
	if len(bytes.TrimSpace(carry)) > 0 {
		fn(carry)
	}
	return nil
}

// lastPosition returns the position of the last line of r's first end
// bytes.
func lastPosition(r io.ReaderAt, end int64) (position, error) {
	var pos position
	var perr error
	err := eachLineBack(r, end, func(line []byte) bool {
		pos, perr = parseLine(line)
		return true
	})
	if err != nil {
		return position{}, err
	}
	return pos, perr
}

// parseLine returns the position a line of the file leaves the export at:
// an event's seq and hash, or a marker's resume point.
func parseLine(line []byte) (position, error) {
	var e struct {
		Type            string `json:"type"`
		Seq             int64  `json:"seq"`
		Hash            string `json:"hash"`
		ResumeAfterSeq  int64  `json:"resume_after_seq"`
		ResumeAfterHash string `json:"resume_after_hash"`
	}
	err := json.Unmarshal(line, &e)
	switch {
	case err == nil && e.Type == markerType && e.ResumeAfterSeq >= 0:
		return position{e.ResumeAfterSeq, e.ResumeAfterHash}, nil
	case err == nil && e.Seq > 0:
		return position{e.Seq, e.Hash}, nil
	}
	return position{}, fmt.Errorf("its last line is not an audit event (%.80q): give a file only the gateway writes to", line)
}

// posPath is the file keeping the position written last, for a FILE
// rotated (under any name) while the gateway was down.
func (af *auditFile) posPath() string { return af.path + ".pos" }

// savedPosition is where to go on when FILE is empty: FILE.pos, or else
// the last line of FILE.1, or else the start of the log.
func (af *auditFile) savedPosition() position {
	if b, err := readNoFollow(af.posPath(), 4<<10); err == nil {
		var p position
		if json.Unmarshal(b, &p) == nil && p.Seq > 0 {
			return p
		}
		af.log.Warn("audit log file: ignoring an unreadable position file", "path", af.posPath())
	}
	rf, err := os.OpenFile(af.path+".1", os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return position{}
	}
	defer rf.Close()
	fi, err := rf.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return position{}
	}
	end, err := lastNewline(rf, fi.Size())
	if err != nil || end == 0 {
		return position{}
	}
	p, err := lastPosition(rf, end)
	if err != nil {
		return position{}
	}
	return p
}

// readNoFollow reads a small regular file without following a symlink.
func readNoFollow(path string, max int64) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	return io.ReadAll(io.LimitReader(f, max))
}

// savePosition records af's position in FILE.pos (0600, replaced
// atomically); a failure is logged once per streak.
func (af *auditFile) savePosition() {
	err := func() error {
		b, _ := json.Marshal(position{af.last, af.lastHash})
		tmp, err := os.CreateTemp(filepath.Dir(af.path), filepath.Base(af.path)+".pos.*")
		if err != nil {
			return err
		}
		_, err = tmp.Write(append(b, '\n'))
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), af.posPath())
		}
		if err != nil {
			os.Remove(tmp.Name())
		}
		return err
	}()
	if err != nil && !af.posFailing {
		af.log.Warn("audit log file: could not record the position; a restart after a rotation may export events again", "path", af.posPath(), "err", err)
	}
	af.posFailing = err != nil
}

// storeHas reports whether the store's event at seq has hash.
func (af *auditFile) storeHas(ctx context.Context, seq int64, hash string) (exists, same bool, err error) {
	if seq == 0 {
		return true, true, nil
	}
	evs, err := af.store.ListAudit(ctx, store.AuditFilter{AfterSeq: seq - 1, Limit: 1})
	if err != nil {
		return false, false, storeError(err)
	}
	if len(evs) == 0 || evs[0].Seq != seq {
		return false, false, nil
	}
	return true, evs[0].Hash == hash, nil
}

// storeEnd returns the seq of the store's last event, known to be below
// above.
func (af *auditFile) storeEnd(ctx context.Context, above int64) (int64, error) {
	lo, hi := int64(0), above // the event at lo exists, the one at hi not
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		evs, err := af.store.ListAudit(ctx, store.AuditFilter{AfterSeq: mid - 1, Limit: 1})
		if err != nil {
			return 0, storeError(err)
		}
		if len(evs) > 0 {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// reconcile checks the resume point against the store. If the store does
// not hold the event written last (its log is shorter, restored from an
// older backup) or holds another one there, the export goes on after the
// last line of the file the store agrees with (the chain makes every
// line before it agree too), after a marker line.
func (af *auditFile) reconcile(ctx context.Context) error {
	exists, same, err := af.storeHas(ctx, af.last, af.lastHash)
	if err != nil || same {
		return err
	}
	limit := af.last
	if !exists {
		if limit, err = af.storeEnd(ctx, af.last); err != nil {
			return err
		}
	}
	agree, err := af.agreement(ctx, limit)
	if err != nil {
		return err
	}
	why := "the store's log ends before the file's last event (restored from an older backup?)"
	if exists {
		why = "the store holds another event at the file's last seq (another store, or restored and rewritten)"
	}
	af.log.Error("audit log file: the file and the store disagree; going on from the last event both hold, after a discontinuity line",
		"path", af.path, "file_seq", af.last, "store_last_seq", limit, "resume_after_seq", agree.Seq, "why", why)
	marker := struct {
		Type            string    `json:"type"`
		Time            time.Time `json:"time"`
		Reason          string    `json:"reason"`
		FileSeq         int64     `json:"file_seq"`
		FileHash        string    `json:"file_hash"`
		StoreSeq        int64     `json:"store_seq"`
		ResumeAfterSeq  int64     `json:"resume_after_seq"`
		ResumeAfterHash string    `json:"resume_after_hash"`
	}{markerType, time.Now().UTC(), why, af.last, af.lastHash, limit, agree.Seq, agree.Hash}
	b, err := json.Marshal(marker)
	if err != nil {
		return err
	}
	return af.append(append(b, '\n'), agree)
}

// agreement returns the position of the last line of the file, at or
// below seq limit, that the store holds as well (zero if none).
func (af *auditFile) agreement(ctx context.Context, limit int64) (position, error) {
	fi, err := af.f.Stat()
	if err != nil {
		return position{}, err
	}
	var found position
	var serr error
	checks := 0
	err = eachLineBack(af.f, fi.Size(), func(line []byte) bool {
		p, err := parseLine(line)
		if err != nil || p.Seq > limit || p.Seq == 0 {
			return false
		}
		if checks++; checks > maxAgreementChecks {
			return true
		}
		_, same, err := af.storeHas(ctx, p.Seq, p.Hash)
		if err != nil {
			serr = err
			return true
		}
		if same {
			found = p
		}
		return same
	})
	if err == nil {
		err = serr
	}
	return found, err
}

// run follows the store until ctx ends, then closes the file.
func (af *auditFile) run(ctx context.Context) {
	defer func() {
		_ = af.f.Sync()
		_ = af.f.Close()
	}()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	af.log.Info("appending audit events to a file", "path", af.path, "after_seq", af.last)
	t := time.NewTicker(af.poll)
	defer t.Stop()
	warned := false
	for {
		if err := af.step(ctx); err != nil && ctx.Err() == nil {
			if !warned {
				af.log.Warn("audit log file: could not append events; retrying", "path", af.path, "after_seq", af.last, "err", err)
				warned = true
			}
		} else {
			warned = false
		}
		select {
		case <-ctx.Done():
			af.flushAll()
			return
		case <-hup:
			af.reopen("SIGHUP")
		case <-t.C:
			if af.rotated() {
				af.reopen("the file was moved or removed")
			}
		}
	}
}

// flushAll writes what was committed up to the end (a last pass at
// Close), for a short while at most.
func (af *auditFile) flushAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = af.step(ctx)
}

// step appends every event committed after af.last.
func (af *auditFile) step(ctx context.Context) error {
	defer panics.Recover(af.log, "audit log file", nil)
	for {
		evs, err := af.store.ListAudit(ctx, store.AuditFilter{AfterSeq: af.last, Limit: auditFileBatch})
		if err != nil {
			return storeError(err)
		}
		if len(evs) == 0 {
			return nil
		}
		if err := af.write(evs); err != nil {
			return err
		}
		if len(evs) < auditFileBatch {
			return nil
		}
	}
}

// write appends evs, one line each, in one write.
func (af *auditFile) write(evs []audit.Event) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, e := range evs {
		if err := enc.Encode(e); err != nil {
			return err
		}
	}
	last := evs[len(evs)-1]
	return af.append(b.Bytes(), position{last.Seq, last.Hash})
}

// append writes whole lines b, which leave the export at pos. A failed
// write is cut back to the file's size before it, so that the retry
// neither leaves a fragment nor writes a line twice.
func (af *auditFile) append(b []byte, pos position) error {
	if af.cut >= 0 {
		if err := af.f.Truncate(af.cut); err != nil {
			return fmt.Errorf("cut %s back to its last whole line: %w", af.path, err)
		}
		af.cut = -1
	}
	fi, err := af.f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", af.path, err)
	}
	size := fi.Size()
	if _, err := af.writeTo(af.f, b); err != nil {
		if cur, serr := af.f.Stat(); serr == nil && cur.Size() > size {
			if terr := af.f.Truncate(size); terr != nil {
				af.cut = size
			}
		}
		return fmt.Errorf("write %s: %w", af.path, err)
	}
	af.last, af.lastHash = pos.Seq, pos.Hash
	af.savePosition()
	return nil
}

// rotated reports whether the path no longer names the open file.
func (af *auditFile) rotated() bool {
	cur, err := af.f.Stat()
	if err != nil {
		return true
	}
	fi, err := os.Stat(af.path)
	if errors.Is(err, fs.ErrNotExist) {
		return true
	}
	return err == nil && !os.SameFile(cur, fi)
}

func (af *auditFile) reopen(why string) {
	old := af.f
	f, err := openPrivate(af.path)
	if err == nil {
		if err = f.Chmod(0o600); err != nil {
			f.Close()
			err = fmt.Errorf("make %s private (0600): %w", af.path, err)
		}
	}
	if err != nil {
		if !af.reopenFailing {
			af.log.Error("audit log file: reopen failed; still writing to the old one (logged once until it succeeds)", "path", af.path, "err", err)
		}
		af.reopenFailing = true
		return
	}
	af.reopenFailing = false
	af.f, af.cut = f, -1
	_ = old.Sync()
	_ = old.Close()
	af.log.Info("audit log file reopened", "path", af.path, "why", why, "after_seq", af.last)
}
