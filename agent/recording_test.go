package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/seal"
)

// fakeUploads is the gateway's recording endpoint: it fails the first
// failures calls with err, then keeps what it gets.
type fakeUploads struct {
	mu       sync.Mutex
	failures int
	err      error
	calls    int
	got      map[string][]byte
}

func (f *fakeUploads) upload(ctx context.Context, session string, data []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls <= f.failures {
		return f.err
	}
	if f.got == nil {
		f.got = map[string][]byte{}
	}
	f.got[session] = bytes.Clone(data)
	return nil
}

func (f *fakeUploads) received(session string) ([]byte, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.got[session], f.calls
}

func testRecordings(t *testing.T, dir string, up func(context.Context, string, []byte) error) (*recordings, *syncBuffer) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	kek := filepath.Join(dir, KEKFile)
	if _, err := os.Stat(kek); err != nil {
		if err := seal.CreateKeyFile(kek, rand.Reader); err != nil {
			t.Fatal(err)
		}
	}
	s, err := seal.NewKeyFileSealer(kek)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	r, err := newRecordings(dir, s, slog.New(slog.NewTextHandler(logs, nil)), up)
	if err != nil {
		t.Fatal(err)
	}
	r.retryMin, r.retryMax = 10*time.Millisecond, 50*time.Millisecond
	return r, logs
}

const cast = "{\"version\": 2}\n[0.1, \"o\", \"typed-secret-42\"]\n"

// An unreachable gateway delays the upload; the recording waits sealed on
// disk and goes once the gateway answers.
func TestRecordingRetriedUntilUploaded(t *testing.T) {
	f := &fakeUploads{failures: 3, err: errors.New("cannot reach the gateway at gw:8443: connection refused")}
	r, logs := testRecordings(t, t.TempDir(), f.upload)
	r.submit("s-1", []byte(cast))
	r.close(30 * time.Second)
	got, calls := f.received("s-1")
	if string(got) != cast || calls != 4 {
		t.Errorf("gateway got %q after %d calls; want the recording after 4", got, calls)
	}
	if _, err := os.Stat(r.path("s-1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the uploaded recording is still on disk: %v", err)
	}
	if n := strings.Count(logs.String(), "cannot upload the session recording yet; retrying"); n != 1 {
		t.Errorf("the retry was logged %d times; want once:\n%s", n, logs.String())
	}
}

// A refusal the gateway will repeat drops the recording, loudly.
func TestRecordingRefusedIsLogged(t *testing.T) {
	f := &fakeUploads{failures: 100, err: &permanentError{errors.New("this agent did not host session s-2")}}
	r, logs := testRecordings(t, t.TempDir(), f.upload)
	r.submit("s-2", []byte(cast))
	r.close(30 * time.Second)
	if _, calls := f.received("s-2"); calls != 1 {
		t.Errorf("a permanent refusal was tried %d times; want 1", calls)
	}
	if out := logs.String(); !strings.Contains(out, `level=ERROR msg="the gateway refused the session recording; it is dropped" session=s-2 reason="this agent did not host session s-2"`) {
		t.Errorf("the refusal is not logged as an error:\n%s", out)
	}
}

// A recording not uploaded when the agent stops stays sealed on disk and
// is uploaded at the next start.
func TestRecordingKeptAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	down := &fakeUploads{failures: 1000, err: errors.New("the gateway at gw:8443 did not answer in time")}
	r, _ := testRecordings(t, dir, down.upload)
	r.submit("s-3", []byte(cast))
	r.close(100 * time.Millisecond) // the agent stops
	raw, err := os.ReadFile(r.path("s-3"))
	if err != nil {
		t.Fatalf("the recording was not kept: %v", err)
	}
	if bytes.Contains(raw, []byte("typed-secret-42")) {
		t.Error("the kept recording is not sealed")
	}

	up := &fakeUploads{}
	r2, logs := testRecordings(t, dir, up.upload)
	r2.resume()
	r2.close(30 * time.Second)
	if got, _ := up.received("s-3"); string(got) != cast {
		t.Errorf("after the restart the gateway got %q; want the recording", got)
	}
	if _, err := os.Stat(r.path("s-3")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the uploaded recording is still on disk: %v", err)
	}
	if !strings.Contains(logs.String(), "uploading a session recording left from an earlier run") {
		t.Errorf("the resumed upload is not logged:\n%s", logs.String())
	}
}

// Bounded: after the last attempt the recording stays on disk, said so.
func TestRecordingGivesUpButKeepsIt(t *testing.T) {
	f := &fakeUploads{failures: 1000, err: errors.New("the gateway answered 503 Service Unavailable")}
	r, logs := testRecordings(t, t.TempDir(), f.upload)
	r.attempts = 3
	r.submit("s-4", []byte(cast))
	r.close(30 * time.Second)
	if _, calls := f.received("s-4"); calls != 3 {
		t.Errorf("tried %d times; want 3", calls)
	}
	if _, err := os.Stat(r.path("s-4")); err != nil {
		t.Errorf("the recording is not kept after the last attempt: %v", err)
	}
	if !strings.Contains(logs.String(), "could not upload the session recording; it stays sealed on disk and is retried at the next start") {
		t.Errorf("giving up is not logged:\n%s", logs.String())
	}
}
