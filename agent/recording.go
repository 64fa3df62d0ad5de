package agent

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tunnelhq/tunnel/agent/internal/sshd"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/asciicast"
	"github.com/tunnelhq/tunnel/pkg/panics"
	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/transport"
)

// RecordingsDir, in the data directory, holds the session recordings not
// uploaded yet, sealed (0600 files, 0700 directory).
const RecordingsDir = "recordings"

const recordingSuffix = ".cast.sealed"

// Upload retries: exponential from uploadRetryMin to uploadRetryMax,
// uploadAttempts in all (about an hour); after that the recording stays on
// disk and is retried at the next start.
const (
	uploadRetryMin = 2 * time.Second
	uploadRetryMax = 5 * time.Minute
	uploadAttempts = 20
	// uploadShutdownGrace is how long a stopping agent waits for the
	// uploads in flight before it leaves them for the next start.
	uploadShutdownGrace = 5 * time.Second
)

// recordings ships session recordings to the gateway. Each recording is
// written sealed to disk first, then uploaded, and removed once the gateway
// has it: a gateway that is unreachable, or refuses for a while, delays a
// recording but never loses it silently. The uploads are goroutines owned
// by recordings; close waits for them.
type recordings struct {
	dir    string
	sealer seal.Sealer
	log    *slog.Logger
	// upload sends one recording; a *permanentError is not retried.
	upload func(ctx context.Context, session string, data []byte) error

	retryMin, retryMax time.Duration
	attempts           int

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	busy   map[string]bool
	closed bool
}

// permanentError is a refusal the gateway will repeat: retrying is useless.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func newRecordings(dir string, sealer seal.Sealer, log *slog.Logger, upload func(context.Context, string, []byte) error) (*recordings, error) {
	d := filepath.Join(dir, RecordingsDir)
	if err := os.MkdirAll(d, 0o700); err != nil {
		return nil, fmt.Errorf("recordings directory: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &recordings{dir: d, sealer: sealer, log: log, upload: upload,
		retryMin: uploadRetryMin, retryMax: uploadRetryMax, attempts: uploadAttempts,
		ctx: ctx, cancel: cancel, busy: map[string]bool{}}, nil
}

func (r *recordings) path(session string) string {
	return filepath.Join(r.dir, hex.EncodeToString([]byte(session))+recordingSuffix)
}

func recordingAD(session string) string { return "agent/recording/" + session }

// submit keeps the recording of session on disk and starts its upload.
func (r *recordings) submit(session string, data []byte) {
	if err := r.keep(session, data); err != nil {
		// Not on disk: the upload from memory is its only chance.
		r.log.Warn("cannot keep the session recording on disk until it is uploaded", "session", session, "err", err)
	}
	r.start(session, data)
}

// keep writes the recording sealed, atomically.
func (r *recordings) keep(session string, data []byte) error {
	sealed, err := r.sealer.Seal(data, recordingAD(session))
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(r.dir, ".rec-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err = tmp.Chmod(0o600); err == nil {
		_, err = tmp.Write(sealed)
		if err == nil {
			err = tmp.Sync()
		}
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), r.path(session))
}

// resume starts the upload of every recording left on disk by an earlier
// run.
func (r *recordings) resume() {
	entries, err := os.ReadDir(r.dir)
	if err != nil {
		r.log.Warn("cannot list the recordings waiting for upload", "dir", r.dir, "err", err)
		return
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), recordingSuffix)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		raw, err := hex.DecodeString(name)
		if err != nil {
			continue
		}
		session := string(raw)
		sealed, err := os.ReadFile(filepath.Join(r.dir, e.Name()))
		if err == nil {
			var data []byte
			if data, err = r.sealer.Open(sealed, recordingAD(session)); err == nil {
				r.log.Info("uploading a session recording left from an earlier run", "session", session)
				r.start(session, data)
				continue
			}
		}
		r.log.Error("a session recording waiting for upload cannot be read; it is left in place", "session", session,
			"file", filepath.Join(r.dir, e.Name()), "err", err)
	}
}

func (r *recordings) start(session string, data []byte) {
	r.mu.Lock()
	if r.closed || r.busy[session] {
		closed := r.closed
		r.mu.Unlock()
		if closed {
			r.log.Info("the agent is stopping: the session recording stays on disk and is uploaded at the next start", "session", session)
		}
		return
	}
	r.busy[session] = true
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		defer func() {
			r.mu.Lock()
			delete(r.busy, session)
			r.mu.Unlock()
		}()
		defer panics.Recover(r.log, "session recording upload", nil)
		r.run(session, data)
	}()
}

// run uploads one recording, retrying with backoff.
func (r *recordings) run(session string, data []byte) {
	bo := transport.Backoff{Min: r.retryMin, Max: r.retryMax}
	var err error
	for attempt := 1; attempt <= r.attempts; attempt++ {
		if err = r.upload(r.ctx, session, data); err == nil {
			_ = os.Remove(r.path(session))
			r.log.Info("session recording uploaded", "session", session, "bytes", len(data))
			return
		}
		if r.ctx.Err() != nil {
			r.log.Info("the agent is stopping: the session recording stays on disk and is uploaded at the next start", "session", session)
			return
		}
		var pe *permanentError
		if errors.As(err, &pe) {
			_ = os.Remove(r.path(session))
			r.log.Error("the gateway refused the session recording; it is dropped", "session", session, "reason", err.Error())
			return
		}
		d := bo.Next()
		if attempt == 1 {
			r.log.Warn("cannot upload the session recording yet; retrying", "session", session, "err", err, "retry_in", d.Round(time.Second))
		}
		if !sleep(r.ctx, d) {
			r.log.Info("the agent is stopping: the session recording stays on disk and is uploaded at the next start", "session", session)
			return
		}
	}
	r.log.Error("could not upload the session recording; it stays sealed on disk and is retried at the next start",
		"session", session, "attempts", r.attempts, "err", err, "file", r.path(session))
}

// close stops taking recordings, lets the uploads in flight finish within
// grace, then cancels the rest (they stay on disk) and waits for them.
func (r *recordings) close(grace time.Duration) {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
	r.cancel()
	<-done
}

// record starts a recording that is uploaded to the gateway when it ends.
func (a *Agent) record(s sshd.Session, width, height int, term string) (sshd.Recorder, error) {
	r := &upload{a: a, session: s.ID}
	w, err := asciicast.NewWriter(&r.buf, asciicast.Header{Version: 2, Width: width, Height: height,
		Timestamp: time.Now().Unix(), Title: fmt.Sprintf("%s@%s (%s)", s.Login, a.identity().Name, s.User),
		Env: map[string]string{"TERM": term}})
	if err != nil {
		return nil, err
	}
	w.MaxBytes = 32 << 20
	r.w = w
	return r, nil
}

// upload is a recording kept in memory until its session ends.
type upload struct {
	a       *Agent
	session string
	mu      sync.Mutex
	buf     bytes.Buffer
	w       *asciicast.Writer
}

func (u *upload) Output(t time.Duration, data []byte) { _ = u.w.Output(t, data) }
func (u *upload) Resize(t time.Duration, w, h int)    { _ = u.w.Resize(t, w, h) }

// Close ends the recording and hands it to the uploader; it does not wait
// for the gateway.
func (u *upload) Close() error {
	if err := u.w.Close(); err != nil {
		return err
	}
	u.mu.Lock()
	data := bytes.Clone(u.buf.Bytes())
	u.mu.Unlock()
	if u.a.recs == nil {
		return errors.New("no recording uploader")
	}
	u.a.recs.submit(u.session, data)
	return nil
}

// uploadRecording sends one recording to the gateway. Refusals the
// gateway will repeat (not this agent's session, too large) are
// *permanentError.
func (a *Agent) uploadRecording(ctx context.Context, session string, data []byte) error {
	c, err := a.apiClient(true)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err = c.DoRaw(ctx, http.MethodPost, api.PathRecordings+"/"+url.PathEscape(session), "application/x-asciicast", bytes.NewReader(data))
	var ae *api.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case api.CodeForbidden, api.CodeBadRequest, api.CodeNotFound:
			return &permanentError{err}
		}
	}
	return err
}
