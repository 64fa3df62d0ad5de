package relay

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/identity"
)

// TestTrackerStats: streams are counted by path while tracked and in
// total; the bytes of metered streams are counted while open and after;
// untrack is safe twice and counts once.
func TestTrackerStats(t *testing.T) {
	s := &Server{}
	relayed := &liveStream{caller: identity.ID{Kind: identity.User, Name: "alice"}, user: "alice", to: "db", bytes: &meter{}, abort: func(quic.StreamErrorCode) {}}
	ssh := &liveStream{caller: identity.ID{Kind: identity.User, Name: "bob"}, user: "bob", to: "web", session: "s1", meter: &meter{}, abort: func(quic.StreamErrorCode) {}}
	direct := &liveStream{caller: identity.ID{Kind: identity.Agent, Name: "app"}, from: "app", to: "db", path: "direct", abort: func(quic.StreamErrorCode) {}}
	u1, u2, u3 := s.streams.track(relayed), s.streams.track(ssh), s.streams.track(direct)
	relayed.bytes.in.Add(10)
	relayed.bytes.out.Add(200)
	ssh.meter.in.Add(1)
	ssh.meter.out.Add(2)
	want := []StreamStats{{Path: PathRelayed, Active: 2, Total: 2}, {Path: PathDirect, Active: 1, Total: 1}, {Path: PathTCP}}
	if diff := cmp.Diff(want, s.StreamStats()); diff != "" {
		t.Errorf("StreamStats while open (-want +got):\n%s", diff)
	}
	if in, out := s.BytesRelayed(); in != 11 || out != 202 {
		t.Errorf("BytesRelayed while open = %d, %d; want 11, 202", in, out)
	}
	if n := s.ActiveSessions(); n != 1 {
		t.Errorf("ActiveSessions = %d; want 1", n)
	}
	u1()
	u1()
	u2()
	u3()
	want = []StreamStats{{Path: PathRelayed, Active: 0, Total: 2}, {Path: PathDirect, Active: 0, Total: 1}, {Path: PathTCP}}
	if diff := cmp.Diff(want, s.StreamStats()); diff != "" {
		t.Errorf("StreamStats after the end (-want +got):\n%s", diff)
	}
	if in, out := s.BytesRelayed(); in != 11 || out != 202 {
		t.Errorf("BytesRelayed after the end = %d, %d; want 11, 202 (counted once)", in, out)
	}
}

// TestRevocationObserved: a stream cut by a revocation is observed once,
// when it ends, with the time since the revocation; streams that end on
// their own, or that the revocation does not cut, are not.
func TestRevocationObserved(t *testing.T) {
	s := &Server{}
	var observed []time.Duration
	var calls atomic.Int64
	s.ObserveRevocations(func(d time.Duration) { calls.Add(1); observed = append(observed, d) })
	var cut atomic.Bool
	var untrack func()
	l := &liveStream{caller: identity.ID{Kind: identity.User, Name: "alice"}, user: "alice", to: "db",
		abort: func(quic.StreamErrorCode) { cut.Store(true) }}
	other := &liveStream{caller: identity.ID{Kind: identity.User, Name: "bob"}, user: "bob", to: "db", abort: func(quic.StreamErrorCode) {}}
	untrack = s.streams.track(l)
	untrackOther := s.streams.track(other)
	s.EndUser("alice", "locked by an administrator")
	s.wg.Wait()
	if !cut.Load() {
		t.Fatal("EndUser did not cut alice's stream")
	}
	if calls.Load() != 0 {
		t.Fatal("observed before the stream ended")
	}
	time.Sleep(10 * time.Millisecond)
	untrack()
	untrack()
	untrackOther()
	if len(observed) != 1 {
		t.Fatalf("observed %d revoked streams; want 1 (alice's)", len(observed))
	}
	if observed[0] < 10*time.Millisecond {
		t.Errorf("observed %v; want at least the 10ms between the revocation and the end", observed[0])
	}
}

// TestPathOf: a connection made through a ConnContext wrapped by OverTCP
// carries the path "tcp"; others the relayed path; a refusal of the
// wrapped ConnContext stands.
func TestPathOf(t *testing.T) {
	ctx, err := OverTCP(nil)(context.Background(), &quic.ClientInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if got := pathOf(ctx); got != PathTCP {
		t.Errorf("pathOf over TCP = %q; want %q", got, PathTCP)
	}
	if got := pathOf(context.Background()); got != "" {
		t.Errorf("pathOf over UDP = %q; want the relayed path (\"\")", got)
	}
	refused := errors.New("refused")
	if _, err := OverTCP(func(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) { return ctx, refused })(context.Background(), &quic.ClientInfo{}); err != refused {
		t.Errorf("OverTCP over a refusing ConnContext: %v; want its refusal", err)
	}
	s := &Server{}
	untrack := s.streams.track(&liveStream{path: pathOf(ctx), abort: func(quic.StreamErrorCode) {}})
	defer untrack()
	if got := s.StreamStats()[2]; got != (StreamStats{Path: PathTCP, Active: 1, Total: 1}) {
		t.Errorf("StreamStats of tcp = %+v; want 1 active, 1 in total", got)
	}
}
