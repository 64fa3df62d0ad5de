package relay

import (
	"strings"
	"testing"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// TestStreamsPerCallerCapped: one user cannot hold more than
// MaxStreamsPerUser streams at once (over all its connections), so it
// cannot take a node's capacity from everyone; another caller still gets
// through, and a finished stream frees its slot.
func TestStreamsPerCallerCapped(t *testing.T) {
	h := newHarness(t, harnessOpts{configure: func(s *Server) { s.MaxStreamsPerUser = 3 }})
	h.startAgent("db-1", map[string]handler{"postgres": echo})
	h.addUser("alice", "db-1/postgres")
	h.addUser("bob", "db-1/postgres")
	aliceCert := h.cert(identity.User, "alice")
	alice1, alice2 := h.dial(aliceCert), h.dial(aliceCert)
	bob := h.dial(h.cert(identity.User, "bob"))

	var held []*quic.Stream
	for i, conn := range []*quic.Conn{alice1, alice2, alice1} {
		st, rep, err := open(t, conn, "db-1/postgres", "", nil)
		if err != nil || rep.Status != wire.StatusOK {
			t.Fatalf("alice's stream %d of 3: %v %v %q", i+1, err, rep.Status, rep.Message)
		}
		held = append(held, st)
	}
	_, rep, err := open(t, alice2, "db-1/postgres", "", nil)
	if err != nil || rep.Status != wire.StatusDenied || !strings.Contains(rep.Message, "3 connections of yours already go through this gateway") {
		t.Fatalf("alice's fourth stream: %v %v %q; want refused with the cap", err, rep.Status, rep.Message)
	}
	st, rep, err := open(t, bob, "db-1/postgres", "", nil)
	if err != nil || rep.Status != wire.StatusOK {
		t.Fatalf("bob's stream while alice is at her cap: %v %v %q; want it through", err, rep.Status, rep.Message)
	}
	roundTrip(t, st, "bob gets in")

	// A finished stream frees its slot.
	roundTrip(t, held[0], "done")
	waitFor(t, "alice's slot to free", func() bool {
		st, rep, err := open(t, alice2, "db-1/postgres", "", nil)
		if err != nil || rep.Status != wire.StatusOK {
			return false
		}
		roundTrip(t, st, "again")
		return true
	})
}

// TestSSHStreamsPerSessionCapped: one session carries at most
// MaxStreamsPerSession streams to the node's SSH endpoint at once (the
// node holds each for its SSH handshake).
func TestSSHStreamsPerSessionCapped(t *testing.T) {
	var a tracker
	var releases []func()
	alice := identity.ID{Cluster: testCluster, Kind: identity.User, Name: "alice"}
	for i := range 2 {
		r, err := a.admit(alice, "s1", 100, 2)
		if err != nil {
			t.Fatalf("stream %d of session s1: %v", i+1, err)
		}
		releases = append(releases, r)
	}
	if _, err := a.admit(alice, "s1", 100, 2); err == nil || !strings.Contains(err.Error(), "session s1 already carries 2 connections") {
		t.Fatalf("a third stream of s1: %v; want the session cap", err)
	}
	if r, err := a.admit(alice, "s2", 100, 2); err != nil {
		t.Fatalf("a stream of another session: %v", err)
	} else {
		r()
	}
	releases[0]()
	releases[0]() // safe twice
	if r, err := a.admit(alice, "s1", 100, 2); err != nil {
		t.Fatalf("after a release: %v", err)
	} else {
		r()
	}
	releases[1]()
	if len(a.callers) != 0 || len(a.sessions) != 0 {
		t.Errorf("counters left after every release: %v %v", a.callers, a.sessions)
	}
}
