package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/trust"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// directAgent is an agent that takes the direct path, played by the test:
// the control messages the relay sends it (MsgExpect, MsgCommitted,
// MsgCut) arrive on msgs.
type directAgent struct {
	conn *quic.Conn
	ctl  *quic.Stream
	msgs chan wire.Control
}

// startDirectAgent enrols and connects name, taking the direct path and
// exposing echo.
func (h *harness) startDirectAgent(name string) *directAgent {
	h.t.Helper()
	h.enrol(name)
	return h.connectDirectAgent(name, h.dial(h.cert(identity.Agent, name)))
}

// connectDirectAgent says hello on conn as name, taking the direct path.
func (h *harness) connectDirectAgent(name string, conn *quic.Conn) *directAgent {
	h.t.Helper()
	ctl, err := conn.OpenStreamSync(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	hello := wire.Control{Type: wire.MsgHello, Version: "test", Direct: true, Addrs: []string{"192.0.2.1:4000"},
		Services: []wire.Service{{Name: "echo"}}}
	if err := wire.WriteHeader(ctl, wire.Header{Kind: wire.KindControl}); err != nil {
		h.t.Fatal(err)
	}
	if err := wire.WriteControl(ctl, hello); err != nil {
		h.t.Fatal(err)
	}
	if m, err := wire.ReadControl(ctl); err != nil || m.Type != wire.MsgWelcome || !m.Ahead {
		h.t.Fatalf("agent %s: no welcome offering streams decided ahead: %+v %v", name, m, err)
	}
	a := &directAgent{conn: conn, ctl: ctl, msgs: make(chan wire.Control, 4096)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := wire.ReadControl(ctl)
			if err != nil {
				return
			}
			select {
			case a.msgs <- m:
			default:
			}
		}
	}()
	h.t.Cleanup(func() {
		conn.CloseWithError(0, "")
		<-done
	})
	waitFor(h.t, "agent "+name+" to register", func() bool { return h.srv.lookup(name) != nil })
	return a
}

// next returns the next control message of type typ for ticket, skipping
// others, within 30 s.
func (a *directAgent) next(t *testing.T, typ, ticket string) wire.Control {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case m := <-a.msgs:
			if m.Type == typ && m.Ticket == ticket {
				return m
			}
		case <-deadline:
			t.Fatalf("the target was not sent %s for ticket %s within 30s", typ, ticket)
		}
	}
}

// noCut fails if the messages received so far cut ticket.
func (a *directAgent) noCut(t *testing.T, ticket, why string) {
	t.Helper()
	for {
		select {
		case m := <-a.msgs:
			if m.Type == wire.MsgCut && m.Ticket == ticket {
				t.Fatalf("the stream of ticket %s was cut %s: %+v", ticket, why, m)
			}
			continue
		default:
		}
		return
	}
}

// allow adds the policy rule from → to.
func (h *harness) allow(from, to string) {
	h.t.Helper()
	if _, err := h.db.AddPolicyRule(context.Background(), store.PolicyRule{Effect: store.Allow, From: from, To: to, CreatedBy: "t", CreatedAt: time.Now()}, h.event()); err != nil {
		h.t.Fatal(err)
	}
	if err := h.srv.ReloadPolicy(context.Background()); err != nil {
		h.t.Fatal(err)
	}
}

// askDirect opens a lease to target asking for the direct path (direct:
// wire.DirectOffer or wire.DirectAhead), and returns it with the reply and,
// for StatusDirect, the grant.
func askDirect(t *testing.T, conn *quic.Conn, target, direct string) (*quic.Stream, wire.Reply, wire.Control) {
	t.Helper()
	st, rep, grant, err := tryAskDirect(conn, target, direct)
	if err != nil {
		t.Fatalf("ask %s for %s: %v", direct, target, err)
	}
	return st, rep, grant
}

// tryAskDirect is askDirect for any goroutine.
func tryAskDirect(conn *quic.Conn, target, direct string) (*quic.Stream, wire.Reply, wire.Control, error) {
	st, err := conn.OpenStreamSync(context.Background())
	if err != nil {
		return nil, wire.Reply{}, wire.Control{}, err
	}
	if err := wire.WriteHeader(st, wire.Header{Kind: wire.KindDial, Target: target, Direct: direct, Ticket: wire.NewTicket()}); err != nil {
		return st, wire.Reply{}, wire.Control{}, err
	}
	_ = st.SetReadDeadline(time.Now().Add(30 * time.Second))
	defer st.SetReadDeadline(time.Time{})
	rep, err := wire.ReadReply(st)
	if err != nil {
		return st, rep, wire.Control{}, err
	}
	var grant wire.Control
	if rep.Status == wire.StatusDirect {
		if grant, err = wire.ReadControl(st); err == nil && (grant.Type != wire.MsgDirect || grant.Ticket == "") {
			err = errors.New("the grant is no MsgDirect with a ticket")
		}
	}
	return st, rep, grant, err
}

// leaseEnds waits for the relay to end lease, and returns how.
func leaseEnds(t *testing.T, lease *quic.Stream, what string) error {
	t.Helper()
	_ = lease.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err := io.ReadAll(lease)
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		t.Fatalf("%s: the relay did not end the lease within 30s", what)
	}
	return err
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

// TestAheadGrantIsVoidUnlessUsed: a grant decided ahead serves no stream
// the relay does not track. Anything but wire.AheadUsed on its lease, or
// holding it past AheadHold, voids it: audited as stream.unused, the lease
// ended, and the target told to forget the ticket. Once a stream runs,
// its caller ending the lease (as a hostile one would, to keep the stream
// out of reach of a revocation) has the target end it too, whether it was
// decided ahead or when it came.
func TestAheadGrantIsVoidUnlessUsed(t *testing.T) {
	h := newHarness(t, harnessOpts{configure: func(s *Server) { s.AheadHold = time.Second }})
	db := h.startDirectAgent("db-1")
	app := h.startDirectAgent("app-1")
	h.allow("app-1", "db-1/echo")
	unused := func() int { return len(h.events(audit.StreamUnused)) }

	// A wrong byte.
	lease, rep, grant := askDirect(t, app.conn, "db-1/echo", wire.DirectAhead)
	if rep.Status != wire.StatusDirect {
		t.Fatalf("ask ahead: %+v; want a direct grant", rep)
	}
	db.next(t, wire.MsgExpect, grant.Ticket)
	if _, err := lease.Write([]byte{'X'}); err != nil {
		t.Fatal(err)
	}
	leaseEnds(t, lease, "a wrong byte on the lease")
	if m := db.next(t, wire.MsgCut, grant.Ticket); m.Code != uint64(transport.StreamCanceled) {
		t.Errorf("the target was told to cut the voided ticket with code %d; want %d", m.Code, transport.StreamCanceled)
	}
	waitFor(t, "the wrong byte's grant audited as unused", func() bool { return unused() == 1 })

	// Held past AheadHold.
	lease, rep, grant = askDirect(t, app.conn, "db-1/echo", wire.DirectAhead)
	if rep.Status != wire.StatusDirect {
		t.Fatalf("ask ahead: %+v; want a direct grant", rep)
	}
	leaseEnds(t, lease, "a grant held past AheadHold")
	db.next(t, wire.MsgCut, grant.Ticket)
	waitFor(t, "the grant held too long audited as unused", func() bool { return unused() == 2 })

	// Used, then the lease ended: the stream counts, and the target ends
	// it when the lease ends.
	lease, rep, grant = askDirect(t, app.conn, "db-1/echo", wire.DirectAhead)
	if rep.Status != wire.StatusDirect {
		t.Fatalf("ask ahead: %+v; want a direct grant", rep)
	}
	if _, err := lease.Write([]byte{wire.AheadUsed}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the used grant to count as an open stream", func() bool { return h.srv.Online()["app-1"].DirectStreams == 1 })
	time.Sleep(1500 * time.Millisecond) // past AheadHold: a stream started is not voided
	if h.srv.Online()["app-1"].DirectStreams != 1 {
		t.Fatal("a grant used was voided after AheadHold")
	}
	lease.Close()
	db.next(t, wire.MsgCut, grant.Ticket)
	if n := unused(); n != 2 {
		t.Errorf("%d stream.unused events after a grant used; want 2", n)
	}

	// Decided when it came, its lease ended at once by the caller.
	lease, rep, grant = askDirect(t, app.conn, "db-1/echo", wire.DirectOffer)
	if rep.Status != wire.StatusDirect {
		t.Fatalf("offer the direct path: %+v; want a direct grant", rep)
	}
	db.next(t, wire.MsgCommitted, grant.Ticket)
	lease.CancelWrite(transport.StreamCanceled)
	db.next(t, wire.MsgCut, grant.Ticket)
	waitFor(t, "the stream untracked", func() bool { return h.srv.Online()["app-1"].DirectStreams == 0 })
}

// TestAheadGrantCutOnlyForItsPrincipal: a lock of another agent, or of a
// user of the same name, leaves an agent's grant held; its own lock cuts
// it (lease reset with StreamRevoked, the target told).
func TestAheadGrantCutOnlyForItsPrincipal(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	db := h.startDirectAgent("db-1")
	app1 := h.startDirectAgent("app-1")
	app2 := h.startDirectAgent("app-2")
	h.addUser("app-1", "db-1/echo")
	h.allow("app-1", "db-1/echo")
	h.allow("app-2", "db-1/echo")

	lease1, rep, grant1 := askDirect(t, app1.conn, "db-1/echo", wire.DirectAhead)
	if rep.Status != wire.StatusDirect {
		t.Fatalf("app-1 asks ahead: %+v", rep)
	}
	lease2, rep, grant2 := askDirect(t, app2.conn, "db-1/echo", wire.DirectAhead)
	if rep.Status != wire.StatusDirect {
		t.Fatalf("app-2 asks ahead: %+v", rep)
	}
	db.next(t, wire.MsgCommitted, grant1.Ticket)

	h.srv.EndUser("app-1", "test: the user app-1 locked")
	h.srv.EndAgent("app-2", "test: the agent app-2 locked")
	var se *quic.StreamError
	if err := leaseEnds(t, lease2, "app-2's grant after its lock"); !errors.As(err, &se) || se.ErrorCode != transport.StreamRevoked {
		t.Errorf("app-2's lease ended with %v; want a reset with StreamRevoked", err)
	}
	if m := db.next(t, wire.MsgCut, grant2.Ticket); m.Code != uint64(transport.StreamRevoked) {
		t.Errorf("the target was told to cut app-2's ticket with code %d; want %d", m.Code, transport.StreamRevoked)
	}

	// app-1's grant is still held: using it starts its stream.
	if _, err := lease1.Write([]byte{wire.AheadUsed}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "app-1's grant to start", func() bool { return h.srv.Online()["app-1"].DirectStreams == 1 })
	db.noCut(t, grant1.Ticket, "by the lock of another principal")
	// Its own lock cuts it.
	h.srv.EndAgent("app-1", "test: the agent app-1 locked")
	if err := leaseEnds(t, lease1, "app-1's stream after its lock"); !errors.As(err, &se) || se.ErrorCode != transport.StreamRevoked {
		t.Errorf("app-1's lease ended with %v; want a reset with StreamRevoked", err)
	}
	db.next(t, wire.MsgCut, grant1.Ticket)
}

// TestAheadRequestsCapped: many ahead requests at once from one agent get
// at most its stream cap of grants (each held counts), the rest a clear
// refusal; another agent still gets its grant, and the relay lives.
func TestAheadRequestsCapped(t *testing.T) {
	const limit = 4
	h := newHarness(t, harnessOpts{configure: func(s *Server) { s.MaxStreamsPerAgent = limit }})
	h.startDirectAgent("db-1")
	app1 := h.startDirectAgent("app-1")
	app2 := h.startDirectAgent("app-2")
	h.allow("app-1", "db-1/echo")
	h.allow("app-2", "db-1/echo")

	var (
		wg               sync.WaitGroup
		mu               sync.Mutex
		granted, refused int
		leases           []*quic.Stream
	)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lease, rep, _, err := tryAskDirect(app1.conn, "db-1/echo", wire.DirectAhead)
			mu.Lock()
			defer mu.Unlock()
			if lease != nil {
				leases = append(leases, lease)
			}
			switch {
			case err != nil:
				t.Errorf("an ahead request over the cap: %v", err)
			case rep.Status == wire.StatusDirect:
				granted++
			case rep.Status == wire.StatusDenied && strings.Contains(rep.Message, "already go through this gateway"):
				refused++
			default:
				t.Errorf("an ahead request over the cap: %+v; want a grant or the cap's refusal", rep)
			}
		}()
	}
	wg.Wait()
	if granted < 1 || granted > limit || granted+refused != 64 {
		t.Errorf("64 ahead requests at once: %d granted, %d refused; want 1 to %d granted, the rest refused", granted, refused, limit)
	}
	lease, rep, _ := askDirect(t, app2.conn, "db-1/echo", wire.DirectAhead)
	if rep.Status != wire.StatusDirect {
		t.Fatalf("app-2's request while app-1 is at its cap: %+v; want a grant", rep)
	}
	lease.Close()
	for _, l := range leases {
		l.CancelWrite(transport.StreamCanceled)
		l.CancelRead(transport.StreamCanceled)
	}
	waitFor(t, "every grant given up to be audited unused", func() bool { return len(h.events(audit.StreamUnused)) == granted+1 })
}

// TestDirectLeaseLost: when the caller's connection to the gateway goes
// silent under a direct stream's lease, the gateway asks the target to
// report the stream (MsgReport) instead of forgetting it; once reported
// (MsgAdopt) it tracks it again, so that a lock of the caller still cuts
// it. The stream itself is not cut: the caller only lost the gateway.
func TestDirectLeaseLost(t *testing.T) {
	h := newHarness(t, harnessOpts{quic: func(c *quic.Config) {
		c.MaxIdleTimeout = 1500 * time.Millisecond
		c.KeepAlivePeriod = 200 * time.Millisecond
	}})
	db := h.startDirectAgent("db-1")
	h.enrol("app-1")
	h.allow("app-1", "db-1/echo")

	// app-1 on a UDP socket of the test's, to silence it.
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	defer tr.Close()
	cert := h.cert(identity.Agent, "app-1")
	cfg := transport.ClientTLS(trust.PinnedClientConfig(h.ca.Pin(), "localhost", nil),
		func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := tr.Dial(ctx, h.ln.Addr(), cfg, transport.QUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	app := h.connectDirectAgent("app-1", conn)

	_, rep, grant := askDirect(t, app.conn, "db-1/echo", wire.DirectOffer)
	if rep.Status != wire.StatusDirect {
		t.Fatalf("offer the direct path: %+v; want a direct grant", rep)
	}
	x := db.next(t, wire.MsgExpect, grant.Ticket)
	db.next(t, wire.MsgCommitted, grant.Ticket)

	// app-1 goes silent: no CONNECTION_CLOSE, its socket gone.
	udp.Close()
	db.next(t, wire.MsgReport, grant.Ticket)
	waitFor(t, "the lease's stream untracked", func() bool { return len(h.srv.LiveStreams()) == 0 })
	// The target serves the stream still, and reports it.
	if err := wire.WriteControl(db.ctl, wire.Control{Type: wire.MsgAdopt, Ticket: grant.Ticket, Caller: x.Caller, Serial: x.Serial, Service: "echo"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reported stream tracked again", func() bool {
		ls := h.srv.LiveStreams()
		return len(ls) == 1 && ls[0].Caller.Name == "app-1" && ls[0].Node == "db-1"
	})
	db.noCut(t, grant.Ticket, "though its caller only lost the gateway")
	// A lock of app-1 reaches it.
	h.srv.EndAgent("app-1", "test: app-1 locked")
	if m := db.next(t, wire.MsgCut, grant.Ticket); m.Code != uint64(transport.StreamRevoked) {
		t.Errorf("the lock cut the reported stream with code %d; want %d", m.Code, transport.StreamRevoked)
	}
}
