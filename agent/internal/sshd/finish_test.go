package sshd

import (
	"context"
	"io"
	"sync"
	"testing"

	gossh "golang.org/x/crypto/ssh"
)

// recordingChannel is a gossh.Channel that records what the server sends.
type recordingChannel struct {
	mu     sync.Mutex
	events []string
}

func (r *recordingChannel) add(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recordingChannel) Read([]byte) (int, error)    { return 0, io.EOF }
func (r *recordingChannel) Write(p []byte) (int, error) { r.add("data"); return len(p), nil }
func (r *recordingChannel) Close() error                { r.add("close"); return nil }
func (r *recordingChannel) CloseWrite() error           { r.add("eof"); return nil }
func (r *recordingChannel) SendRequest(name string, _ bool, _ []byte) (bool, error) {
	r.add(name)
	return true, nil
}
func (r *recordingChannel) Stderr() io.ReadWriter { return stderrRecorder{r} }

type stderrRecorder struct{ r *recordingChannel }

func (s stderrRecorder) Read([]byte) (int, error) { return 0, io.EOF }
func (s stderrRecorder) Write(p []byte) (int, error) {
	s.r.add("stderr:" + string(p))
	return len(p), nil
}

// TestFinishLeavesEndingChannelOpen: a program stopped because the
// connection is ending must not close its channel, or the reason that
// shutdown writes to the channel next would never reach the client.
func TestFinishLeavesEndingChannelOpen(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(&EndError{Kind: ErrSessionEnded, Message: "access revoked"})
	ch := &recordingChannel{}
	s := &session{c: &conn{ctx: ctx}, ch: ch}
	s.finish(nil)
	s.notify("access revoked")
	want := []string{"stderr:access revoked\n"}
	if got := ch.events; len(got) != 1 || got[0] != want[0] {
		t.Errorf("channel saw %q; want %q (the reason, and the channel still open)", got, want)
	}
}

// TestFinishReportsExit: the usual end still sends the status, EOF and close.
func TestFinishReportsExit(t *testing.T) {
	ch := &recordingChannel{}
	s := &session{c: &conn{ctx: context.Background()}, ch: ch}
	s.finish(nil)
	want := []string{"exit-status", "eof", "close"}
	if got := ch.events; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("channel saw %q; want %q", got, want)
	}
}

var _ gossh.Channel = (*recordingChannel)(nil)
