package integration

// The hostile-client suite (issue 7 §1): every listener the binaries open
// gets what port scanners, load balancers, fuzzers and slow clients send,
// and after each attack the processes must be alive, must not have
// panicked (not even a recovered panic: the cause must be fixed), and a
// legitimate user must still log in and open streams.
//
// Listeners (the "inventory" subtests check this table against the sockets
// each process really holds, from /proc, so a new listener fails the suite
// until it is added here):
//
//	name          process              socket                                 speaks                        reached by
//	api-https     tunnel-gateway       TCP --api-addr                         TLS 1.3, then HTTP/1.1, or    anyone
//	                                                                          QUIC over TCP (ALPN
//	                                                                          tunnel-tcp/1, framed)
//	quic          tunnel-gateway       UDP --api-addr (or --quic-addr)        QUIC v1, ALPN tunnel/1, mTLS  anyone
//	jump-ssh      tunnel-gateway       TCP --ssh-addr                         SSH (gliderlabs/ssh)          anyone
//	agent-listen  tunnel-agent (app-1) TCP, each `listen:` entry of its YAML  raw bytes, carried to a stream local processes
//	agent-udp     tunnel-agent (each)  UDP, its one QUIC socket               QUIC client to the gateway;   anyone who finds the port
//	                                                                          server of the direct path
//	                                                                          (ALPN tunnel-peer/1, mTLS
//	                                                                          with agent certificates)
//	agent-peer-   tunnel-agent (each)  TCP on the port number of its UDP       TLS 1.3, ALPN                 anyone who finds the port
//	tcp                                socket (the direct path over TCP)      tunnel-peer-tcp/1, mTLS with
//	                                                                          agent certificates, then one
//	                                                                          direct stream
//	agent-sshd    tunnel-agent (web-1) none: a stream the gateway delivers    SSH (the node's endpoint)     an authenticated user, via the
//	                                                                                                        jump host's direct-tcpip
//	proxy-db      tunnel proxy db      TCP 127.0.0.1:--port                   raw bytes, carried to a stream local processes
//	proxy-udp     tunnel proxy db      UDP, its QUIC client socket            QUIC, client side             anyone who finds the port
//
// Not covered here: the Unix socket the node's SSH endpoint opens for agent
// forwarding (only the session's own login can reach it), and the
// gateway's DNS server (--dns-addr, off in this environment), whose own
// hostile-client test (gateway/internal/dnsserver/hostile_test.go) gives
// it connect-and-close, garbage, half messages, thousands of silent TCP
// clients and UDP floods, on real sockets.
//
// Attacks, on every TCP listener and on agent-sshd:
//
//	connect-close       connect, then close at once: once with a FIN, once with a reset
//	connect-close-2000  the same 2,000 times from one source (200 SSH channels for agent-sshd)
//	garbage             4 KiB of random bytes
//	banner-junk         the protocol's opening, then junk: SSH-2.0-OpenSSH_9.6 + junk; a TLS
//	                    record and ClientHello header with a junk body; a PostgreSQL SSLRequest
//	                    + junk for the raw listeners
//	half-handshake      half of a real ClientHello, or the SSH banner and a real KEXINIT, then
//	                    nothing
//	silent              connect and say nothing
//	silent-2000         2,000 silent connections from one source (200 channels for agent-sshd),
//	                    held while the legitimate user works
//
// half-handshake and silent connections are opened when the suite starts and
// checked at their turn: a listener with a handshake (api-https, jump-ssh,
// agent-sshd, agent-peer-tcp) must close them within three times its
// handshake timeout. The
// raw listeners carry whatever a local client sends to the service behind, and
// an idle connection there is legitimate (a connection pool): they must only
// survive.
//
// On the QUIC listener: connect-close (a handshake with a foreign certificate,
// closed at once) and 300 of them; garbage datagrams; initial-junk (a
// valid-looking Initial long header followed by junk); foreign-cert,
// wrong-alpn and no-cert handshakes, each refused by the gateway;
// half-handshake (a real Initial, never followed up) and 500 of them; silent
// (a real Initial whose handshake the gateway must abandon within three times
// its handshake timeout); stream-junk and stream-silent (a user with a valid
// certificate opens streams with a junk header, or one byte of a header and
// then nothing: the gateway must refuse them, the latter within three times
// its header timeout); flood (3,000 datagrams of mixed junk). On the agents'
// and the proxy's QUIC client sockets: garbage, initial-junk and flood; on
// the agents' (which also accept other agents' direct connections):
// foreign-cert, user-cert (a user's certificate of the cluster), no-cert and
// wrong-alpn handshakes, each refused during the handshake, and 500 real
// Initials never followed up.
//
// On the agents' direct-path listener over TCP (agent-peer-tcp): the TCP
// attacks above on web-1's (the target of the legitimate direct streams, so
// that silent-2000, past the listener's cap of 1,024 connections, shows that
// they still get through, over QUIC), whose handshake timeout is
// transport.HeaderTimeout; and on both agents' foreign-cert, user-cert,
// no-cert and wrong-alpn TLS handshakes, each refused by the agent with a
// TLS alert.
//
// The legitimate user, after every attack: a user of a pool (so that TOTP
// steps never run out) runs tunnel login, then a command on web-1 with stock
// OpenSSH through the jump host (ssh -J) with the new certificate, while
// streams go through app-1's listener and through bob's tunnel proxy db to
// an echo service on web-1.
//
// Attackers use source addresses 127.0.0.11 and up; the legitimate user,
// the agents and the proxy use 127.0.0.1, so that per-source limits protect
// them. After each listener's attacks (the subtest LISTENER/descriptors)
// and after all of them (descriptors), each process's open descriptors must
// come back near where they were before: no leak. Goroutine counts are not
// checked: the binaries expose no way to read them.
//
// The environment (processes, the legitimate user, descriptors, the
// inventory) is in hostile_env_test.go; the attack clients, reusable
// elsewhere, in internal/hostile.
//
// When a process dies, the attack that killed it fails with the process's
// last log lines, and the suite restarts it so that the attacks after it
// still say something.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/integration/internal/hostile"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// Sizes of the floods: bounded, loopback only, small enough for CI on two
// cores.
const (
	hostileFlood        = 2000 // TCP connections
	hostileChannelFlood = 200  // SSH channels to the node through the jump host
	hostileQUICFlood    = 300  // complete QUIC handshakes
	hostileInitialFlood = 500  // abandoned QUIC handshakes
	hostileDatagrams    = 3000 // junk datagrams
	hostileWorkers      = 50   // concurrent dials in a flood
	hostileFDSlack      = 24   // descriptors above the baseline still "near" it
)

// Handshake timeouts the suite assumes when the binaries have no flag to set
// them: http.Server's ReadHeaderTimeout bounds the API's TLS handshake, the
// jump host has jumphost.DefaultHandshakeTimeout, the node's SSH endpoint
// sshd.DefaultHandshakeTimeout (both internal packages, hence the copies),
// and QUIC has transport.HandshakeTimeout and transport.HeaderTimeout.
// A gateway flag --handshake-timeout sets the API's and QUIC's; one whose
// name has ssh or jump in it, the jump host's; an agent flag with
// handshake-timeout in its name, the node's SSH endpoint's.
const (
	hostileDefaultAPIHandshake  = 10 * time.Second
	hostileDefaultJumpHandshake = 15 * time.Second
	hostileDefaultSSHDHandshake = 30 * time.Second
	hostileSetHandshake         = 5 * time.Second // what the suite sets when there is a flag
)

func TestHostile(t *testing.T) {
	e := newHostileEnv(t)

	t.Run("inventory", e.inventory)
	e.startHeld(t)
	for _, l := range e.listeners() {
		t.Run(l.name, func(t *testing.T) {
			fds, restarts := e.snapshot()
			for _, a := range l.attacks {
				t.Run(a.name, func(t *testing.T) {
					mark := e.logMarks()
					a.run(t)
					e.after(t, mark)
				})
				e.recover(t)
			}
			// A leak shows in the group that caused it.
			t.Run("descriptors", func(t *testing.T) { e.checkFDs(t, fds, restarts, 15*time.Second) })
		})
	}
	e.closeHeld()
	// And nothing crept up across the groups.
	t.Run("descriptors", func(t *testing.T) {
		// recover retakes the baseline of what it restarts.
		e.mu.Lock()
		base, restarts := maps.Clone(e.baseline), maps.Clone(e.restarts)
		e.mu.Unlock()
		e.checkFDs(t, base, restarts, 15*time.Second)
	})
}

// ---- held connections: half-handshake and silent ----

// hostileHeld is a connection opened when the attacks start and judged at
// its subtest's turn, so that waiting for timeouts overlaps the rest.
type hostileHeld struct {
	watch    *hostile.Watch   // TCP, SSH channel or QUIC stream
	udp      *hostile.UDPHold // an abandoned QUIC handshake
	closer   func()           // what else to close with it
	gen      int              // the gateway generation it was opened in
	err      error            // opening it failed
	deadline time.Time        // the server must end it by then
	hsTime   time.Duration    // QUIC: the gateway's handshake timeout
	mustEnd  bool             // false for raw listeners: idle connections are legitimate there
}

func (e *hostileEnv) startHeld(t *testing.T) {
	now := time.Now()
	tcp := func(key, src, dst string, first []byte, timeout time.Duration, mustEnd bool) {
		h := &hostileHeld{gen: e.gen, deadline: now.Add(3 * timeout), mustEnd: mustEnd}
		e.held[key] = h
		c, err := hostile.TCPFrom(src, dst, 10*time.Second)()
		if err != nil {
			h.err = err
			return
		}
		if len(first) > 0 {
			if _, err := c.Write(first); err != nil {
				h.err = err
			}
		}
		h.watch = hostile.NewWatch(c)
	}
	halfHello := e.hello[:len(e.hello)/2]
	sshHalf := append([]byte(hostile.SSHBanner), e.kexinit...)
	tcp("api-https/half-handshake", "127.0.0.31", e.c.addr, halfHello, e.apiHS, true)
	tcp("api-https/silent", "127.0.0.31", e.c.addr, nil, e.apiHS, true)
	tcp("jump-ssh/half-handshake", "127.0.0.33", e.c.sshAddr, sshHalf, e.jumpHS, true)
	tcp("jump-ssh/silent", "127.0.0.33", e.c.sshAddr, nil, e.jumpHS, true)
	tcp("agent-listen/half-handshake", "127.0.0.34", e.agentAd, halfHello, 0, false)
	tcp("agent-listen/silent", "127.0.0.34", e.agentAd, nil, 0, false)
	tcp("proxy-db/half-handshake", "127.0.0.35", e.proxyAd, halfHello, 0, false)
	tcp("proxy-db/silent", "127.0.0.35", e.proxyAd, nil, 0, false)
	// The agents' direct-path listener over TCP bounds the TLS handshake
	// and the header with transport.HeaderTimeout.
	peerTCP := e.peerTCPAddr("web-1")
	tcp("agent-peer-tcp/half-handshake", "127.0.0.37", peerTCP, halfHello, transport.HeaderTimeout, true)
	tcp("agent-peer-tcp/silent", "127.0.0.37", peerTCP, nil, transport.HeaderTimeout, true)

	// The node's SSH endpoint, through channels of an authenticated jump
	// connection.
	for _, a := range []struct {
		key   string
		first []byte
	}{{"agent-sshd/half-handshake", sshHalf}, {"agent-sshd/silent", nil}} {
		h := &hostileHeld{gen: e.gen, deadline: now.Add(3 * e.sshdHS), mustEnd: true}
		e.held[a.key] = h
		client, err := e.jumpClient(e.mallory, "127.0.0.36")
		if err != nil {
			h.err = err
			continue
		}
		h.closer = func() { client.Close() }
		ch, err := client.Dial("tcp", "web-1:22")
		if err != nil {
			h.err = fmt.Errorf("open a channel to web-1:22: %w", err)
			continue
		}
		if len(a.first) > 0 {
			if _, err := ch.Write(a.first); err != nil {
				h.err = err
			}
		}
		h.watch = hostile.NewWatch(ch)
	}

	// QUIC: a real Initial never followed up; a stream with one byte of a
	// header.
	h := &hostileHeld{gen: e.gen, deadline: now.Add(3 * e.quicHS), hsTime: e.quicHS, mustEnd: true}
	e.held["quic/silent"] = h
	h.udp, h.err = hostile.NewUDPHold("127.0.0.32", e.c.addr, e.initials[0])

	h = &hostileHeld{gen: e.gen, deadline: now.Add(3 * transport.HeaderTimeout), mustEnd: true}
	e.held["quic/stream-silent"] = h
	conn, closeConn, err := e.quicDial("127.0.0.32", e.userCert(t, e.mallory), wire.ALPN, transport.QUICConfig())
	if err != nil {
		h.err = err
		return
	}
	h.closer = closeConn
	st, err := conn.OpenStreamSync(context.Background())
	if err == nil {
		_, err = st.Write([]byte{wire.Version})
	}
	if err != nil {
		h.err = fmt.Errorf("open a stream: %w", err)
		return
	}
	h.watch = hostile.NewWatch(hostileStream{st})
}

// checkHeld judges the held connection of the running subtest.
func (e *hostileEnv) checkHeld(t *testing.T, key string) {
	t.Helper()
	h := e.held[key]
	if h == nil {
		t.Fatalf("no held connection %s", key)
	}
	defer h.close()
	if h.err != nil {
		t.Fatalf("could not open the connection when the attacks started: %v", h.err)
	}
	switch {
	case h.udp != nil:
		e.checkAbandoned(t, h)
	case !h.mustEnd:
		if _, err, ended := h.watch.Ended(); ended {
			t.Logf("closed by the other side after %d bytes: %v", h.watch.Received(), err)
		} else {
			t.Logf("still open after %s, as an idle client connection may be", time.Since(h.watch.Start()).Round(time.Second))
		}
	case h.watch.WaitClosed(h.deadline):
		at, err, _ := h.watch.Ended()
		t.Logf("closed by the server %s after it opened (%d bytes received; %v)", at.Sub(h.watch.Start()).Round(time.Millisecond), h.watch.Received(), err)
	default:
		t.Errorf("still open %s after it opened; want the server to close it within %s (three times its handshake timeout)",
			time.Since(h.watch.Start()).Round(time.Second), h.deadline.Sub(h.watch.Start()))
	}
	e.mu.Lock()
	gen := e.gen
	e.mu.Unlock()
	if gen != h.gen {
		t.Errorf("the gateway was restarted while this connection was held (an earlier attack killed it): this result is void")
	}
}

// checkAbandoned judges an abandoned QUIC handshake: the gateway must have
// answered it, and must have dropped it within the deadline. A server that
// still holds a handshake answers its resent Initial as the same connection
// (the source connection ID it chose); one that dropped it starts a new
// connection with a new ID (or sends a Retry, also with a new ID).
func (e *hostileEnv) checkAbandoned(t *testing.T, h *hostileHeld) {
	t.Helper()
	u := h.udp
	waitFor(t, 10*time.Second, "the gateway to answer a real QUIC Initial", func() bool { return len(u.ServerIDs()) > 0 })
	// Not before the handshake timeout: the state must exist until then.
	time.Sleep(time.Until(u.Start().Add(h.hsTime + time.Second)))
	for {
		if err := u.Resend(); err != nil {
			t.Fatalf("resend the Initial: %v", err)
		}
		time.Sleep(time.Second)
		if ids := u.ServerIDs(); len(ids) > 1 {
			t.Logf("dropped: the Initial resent %s after the first opened a new connection (server IDs %v)",
				time.Since(u.Start()).Round(time.Second), ids)
			return
		}
		if time.Now().After(h.deadline) {
			n, _ := u.Answers()
			t.Errorf("the gateway still holds a handshake abandoned %s ago (a resent Initial is answered as the same connection, %d datagrams so far); want it dropped within %s",
				time.Since(u.Start()).Round(time.Second), n, h.deadline.Sub(u.Start()))
			return
		}
	}
}

func (h *hostileHeld) close() {
	if h.watch != nil {
		h.watch.Close()
	}
	if h.udp != nil {
		h.udp.Close()
	}
	if h.closer != nil {
		h.closer()
	}
}

func (e *hostileEnv) closeHeld() {
	for _, h := range e.held {
		h.close()
	}
}

// hostileStream lets a Watch read a QUIC stream: Close cancels both
// directions so that a pending Read returns.
type hostileStream struct{ *quic.Stream }

func (s hostileStream) Close() error {
	s.CancelRead(transport.StreamCanceled)
	s.CancelWrite(transport.StreamCanceled)
	return nil
}

// ---- the attacks ----

type hostileListener struct {
	name    string
	attacks []hostileAttack
}

type hostileAttack struct {
	name string
	run  func(t *testing.T)
}

func (e *hostileEnv) listeners() []hostileListener {
	// What a PostgreSQL client that wants TLS sends, then junk: the raw
	// listeners carry it to the service behind.
	raw := append(slices.Clone(hostile.PGSSLRequest), hostile.Garbage(4096)...)
	return []hostileListener{
		{"agent-listen", e.tcpAttacks("agent-listen", "127.0.0.14", func() string { return e.agentAd }, raw)},
		{"proxy-db", e.tcpAttacks("proxy-db", "127.0.0.15", func() string { return e.proxyAd }, raw)},
		{"agent-udp", append(e.udpAttacks("127.0.0.17", "web-1", "app-1"), e.peerAttacks("127.0.0.17", "web-1", "app-1")...)},
		{"proxy-udp", e.udpAttacks("127.0.0.18", "proxy")},
		{"quic", e.quicAttacks("127.0.0.12", "127.0.0.19")},
		// The listeners with held connections to judge come after the
		// others, so that waiting for their deadlines overlaps the rest.
		{"agent-peer-tcp", append(e.tcpAttacks("agent-peer-tcp", "127.0.0.20", func() string { return e.peerTCPAddr("web-1") }, hostile.TLSHeaderThenJunk(e.hello)),
			e.peerTCPAttacks("127.0.0.20", "web-1", "app-1")...)},
		{"api-https", append(e.tcpAttacks("api-https", "127.0.0.11", func() string { return e.c.addr }, hostile.TLSHeaderThenJunk(e.hello)),
			e.quicOverTCPAttacks("127.0.0.11")...)},
		{"agent-sshd", e.sshdAttacks("127.0.0.16")},
		// Last: before issue 7 a bare connection killed the gateway here.
		{"jump-ssh", e.tcpAttacks("jump-ssh", "127.0.0.13", func() string { return e.c.sshAddr }, append([]byte(hostile.SSHBanner), hostile.Garbage(4096)...))},
	}
}

// tcpAttacks are the attacks on a TCP listener at addr(), from src.
func (e *hostileEnv) tcpAttacks(name, src string, addr func() string, bannerJunk []byte) []hostileAttack {
	dial := func() hostile.Dialer { return hostile.TCPFrom(src, addr(), 10*time.Second) }
	// How long to watch the answer to junk: a raw listener's echo service
	// keeps the connection, a handshake listener should close it at once.
	watch := 2 * time.Second
	if name == "agent-listen" || name == "proxy-db" {
		watch = 500 * time.Millisecond
	}
	return []hostileAttack{
		{"connect-close", func(t *testing.T) {
			if r := hostile.ConnectClose(2, 1, dial()); r.Connected != 2 {
				t.Errorf("connect-and-close: %+v; want both connections accepted", r)
			}
		}},
		{fmt.Sprintf("connect-close-%d", hostileFlood), func(t *testing.T) {
			r := hostile.ConnectClose(hostileFlood, hostileWorkers, dial())
			t.Logf("%d connected, %d failed (%v)", r.Connected, r.Failed, r.FirstErr)
		}},
		{"garbage", func(t *testing.T) { hostileSend(t, dial(), hostile.Garbage(4096), watch) }},
		{"banner-junk", func(t *testing.T) { hostileSend(t, dial(), bannerJunk, watch) }},
		{"half-handshake", func(t *testing.T) { e.checkHeld(t, name+"/half-handshake") }},
		{"silent", func(t *testing.T) { e.checkHeld(t, name+"/silent") }},
		{fmt.Sprintf("silent-%d", hostileFlood), func(t *testing.T) { e.holdMany(t, hostileFlood, dial()) }},
	}
}

// hostileSend sends payload on a new connection, reads the answer for at
// most watch (logged), and closes.
func hostileSend(t *testing.T, dial hostile.Dialer, payload []byte, watch time.Duration) {
	t.Helper()
	c, err := dial()
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	w := hostile.NewWatch(c)
	defer w.Close()
	if _, err := c.Write(payload); err != nil {
		t.Logf("write: %v (the server may close first)", err)
	}
	if w.WaitClosed(time.Now().Add(watch)) {
		at, err, _ := w.Ended()
		t.Logf("the server answered %d bytes and closed after %s: %v", w.Received(), at.Sub(w.Start()).Round(time.Millisecond), err)
	} else {
		t.Logf("the server answered %d bytes and kept the connection for %s", w.Received(), watch)
	}
}

// holdMany opens n silent connections, checks the legitimate user while
// they are held, and closes them.
func (e *hostileEnv) holdMany(t *testing.T, n int, dial hostile.Dialer) {
	t.Helper()
	conns, r := hostile.Hold(n, hostileWorkers, dial)
	defer hostile.CloseAll(conns)
	t.Logf("%d connected, %d failed (%v)", r.Connected, r.Failed, r.FirstErr)
	e.legit(t)
}

// sshdAttacks reach the node's SSH endpoint through channels of
// authenticated jump connections (a user with the right to reach web-1).
func (e *hostileEnv) sshdAttacks(src string) []hostileAttack {
	// withChannels gives f a dialer of channels to web-1:22 on a fresh
	// jump connection.
	withChannels := func(f func(t *testing.T, dial hostile.Dialer)) func(t *testing.T) {
		return func(t *testing.T) {
			client, err := e.jumpClient(e.mallory, src)
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			f(t, func() (net.Conn, error) { return client.Dial("tcp", "web-1:22") })
		}
	}
	return []hostileAttack{
		{"connect-close", withChannels(func(t *testing.T, dial hostile.Dialer) {
			if r := hostile.ConnectClose(2, 1, dial); r.Connected != 2 {
				t.Errorf("open-and-close a channel: %+v; want both opened", r)
			}
		})},
		{fmt.Sprintf("connect-close-%d", hostileChannelFlood), withChannels(func(t *testing.T, dial hostile.Dialer) {
			r := hostile.ConnectClose(hostileChannelFlood, 16, dial)
			t.Logf("%d channels opened, %d refused (%v)", r.Connected, r.Failed, r.FirstErr)
		})},
		{"garbage", withChannels(func(t *testing.T, dial hostile.Dialer) { hostileSend(t, dial, hostile.Garbage(4096), 2*time.Second) })},
		{"banner-junk", withChannels(func(t *testing.T, dial hostile.Dialer) {
			hostileSend(t, dial, append([]byte(hostile.SSHBanner), hostile.Garbage(4096)...), 2*time.Second)
		})},
		{"half-handshake", func(t *testing.T) { e.checkHeld(t, "agent-sshd/half-handshake") }},
		{"silent", func(t *testing.T) { e.checkHeld(t, "agent-sshd/silent") }},
		{fmt.Sprintf("silent-%d", hostileChannelFlood), withChannels(func(t *testing.T, dial hostile.Dialer) {
			conns, r := hostile.Hold(hostileChannelFlood, 16, dial)
			defer hostile.CloseAll(conns)
			t.Logf("%d channels opened, %d refused (%v)", r.Connected, r.Failed, r.FirstErr)
			e.legit(t)
		})},
	}
}

// udpAttacks send junk to the QUIC client sockets of the named processes.
func (e *hostileEnv) udpAttacks(src string, procs ...string) []hostileAttack {
	send := func(packets func() [][]byte) func(t *testing.T) {
		return func(t *testing.T) {
			for _, dst := range e.udpTargets(t, procs...) {
				if _, err := hostile.SendUDP(src, dst, packets()); err != nil {
					t.Errorf("send to %s: %v", dst, err)
				}
			}
		}
	}
	return []hostileAttack{
		{"garbage", send(func() [][]byte { return hostileChunks(hostile.Garbage(4096), 1024) })},
		{"initial-junk", send(func() [][]byte { return hostileRepeat(10, hostile.InitialJunk) })},
		{"flood", send(func() [][]byte { return hostile.Flood(hostileDatagrams) })},
	}
}

// quicOverTCPAttacks reach the QUIC-over-TCP side of the API port (TLS
// with ALPN tunnel-tcp/1, then framed QUIC packets): junk frames and then
// an oversized one must get the connection closed; a silent one must be
// closed within three times the QUIC idle timeout.
func (e *hostileEnv) quicOverTCPAttacks(src string) []hostileAttack {
	dialTLS := func(t *testing.T) *tls.Conn {
		t.Helper()
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", e.c.addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13,
			NextProtos: []string{wire.ALPNTCP}})
		if err != nil {
			t.Fatalf("TLS with ALPN %s: %v", wire.ALPNTCP, err)
		}
		if p := c.ConnectionState().NegotiatedProtocol; p != wire.ALPNTCP {
			c.Close()
			t.Fatalf("the gateway negotiated %q; want %s", p, wire.ALPNTCP)
		}
		return c
	}
	closedWithin := func(t *testing.T, c *tls.Conn, d time.Duration) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(d))
		_, err := io.Copy(io.Discard, c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("the gateway kept the QUIC-over-TCP connection open for %s; want it closed", d)
		}
	}
	return []hostileAttack{
		{"quic-tcp-junk", func(t *testing.T) {
			c := dialTLS(t)
			defer c.Close()
			var b []byte
			for _, p := range hostileChunks(hostile.Garbage(100*1200), 1200) {
				b, _ = transport.AppendFrame(b, p)
			}
			b = append(b, 0xff, 0xff) // a frame longer than any packet
			b = append(b, hostile.Garbage(4096)...)
			_, _ = c.Write(b)
			closedWithin(t, c, 30*time.Second)
		}},
		{"quic-tcp-silent", func(t *testing.T) {
			c := dialTLS(t)
			defer c.Close()
			closedWithin(t, c, 3*transport.IdleTimeout)
		}},
	}
}

// peerAttacks are handshakes the agents' direct-path listener must refuse
// during the handshake (it needs an agent certificate of the cluster and
// the peer ALPN), and real Initials never followed up.
func (e *hostileEnv) peerAttacks(src string, procs ...string) []hostileAttack {
	const peerALPN = "tunnel-peer/1"
	quicConf := &quic.Config{HandshakeIdleTimeout: 10 * time.Second, MaxIdleTimeout: 30 * time.Second}
	refusedHandshake := func(what string, cert func(t *testing.T) *tls.Certificate, alpn string) hostileAttack {
		return hostileAttack{what, func(t *testing.T) {
			c := cert(t)
			for _, dst := range e.udpTargets(t, procs...) {
				conn, closeConn, err := quicDialTo(src, dst, c, alpn, quicConf)
				if err == nil {
					// A TLS 1.3 client may finish before the server has
					// checked its certificate: the server then closes.
					select {
					case <-conn.Context().Done():
						err = context.Cause(conn.Context())
					case <-time.After(15 * time.Second):
					}
					closeConn()
				}
				var te *quic.TransportError
				if !errors.As(err, &te) || !te.Remote {
					t.Errorf("%s to the agent at %s ended with %v; want the agent to refuse the handshake", what, dst, err)
				}
			}
		}}
	}
	foreign := func(t *testing.T) *tls.Certificate {
		c, err := hostile.ForeignClientCert("app-1")
		if err != nil {
			t.Fatal(err)
		}
		return &c
	}
	return []hostileAttack{
		refusedHandshake("foreign-cert", foreign, peerALPN),
		refusedHandshake("user-cert", func(t *testing.T) *tls.Certificate { return e.userCert(t, e.mallory) }, peerALPN),
		refusedHandshake("no-cert", func(*testing.T) *tls.Certificate { return nil }, peerALPN),
		refusedHandshake("wrong-alpn", func(t *testing.T) *tls.Certificate { return e.userCert(t, e.mallory) }, wire.ALPN),
		{fmt.Sprintf("half-handshake-%d", hostileInitialFlood), func(t *testing.T) {
			for _, dst := range e.udpTargets(t, procs...) {
				if _, err := hostile.SendUDP(src, dst, e.initials[2:]); err != nil {
					t.Errorf("send to %s: %v", dst, err)
				}
			}
		}},
	}
}

// peerTCPAddr is the address of agent name's direct-path listener over
// TCP, or "" (a dial then fails and says so) when it holds none.
func (e *hostileEnv) peerTCPAddr(name string) string {
	addrs, err := e.peerTCPAddrs(name)
	if err != nil {
		return ""
	}
	return addrs[0]
}

// peerTCPAttacks are TLS handshakes the agents' direct-path listener over
// TCP must refuse (it needs an agent certificate of the cluster and ALPN
// tunnel-peer-tcp/1): the agent ends each with a TLS alert, during the
// handshake or, since a TLS 1.3 client finishes before the server has
// checked its certificate, on the client's first read.
func (e *hostileEnv) peerTCPAttacks(src string, procs ...string) []hostileAttack {
	const peerTCPALPN = "tunnel-peer-tcp/1"
	refusedHandshake := func(what string, cert func(t *testing.T) *tls.Certificate, alpn string) hostileAttack {
		return hostileAttack{what, func(t *testing.T) {
			c := cert(t)
			for _, dst := range e.peerTCPTargets(t, procs...) {
				conn, err := hostile.TCPFrom(src, dst, 10*time.Second)()
				if err != nil {
					t.Fatalf("connect to %s: %v", dst, err)
				}
				conf := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, NextProtos: []string{alpn}}
				if c != nil {
					conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return c, nil }
				}
				tc := tls.Client(conn, conf)
				_ = tc.SetDeadline(time.Now().Add(15 * time.Second))
				err = tc.Handshake()
				if err == nil {
					_, err = tc.Read(make([]byte, 1))
				}
				tc.Close()
				var oe *net.OpError
				if !errors.As(err, &oe) || oe.Op != "remote error" {
					t.Errorf("%s to the agent at %s ended with %v; want the agent to refuse the handshake with a TLS alert", what, dst, err)
				} else {
					t.Logf("%s: refused: %v", dst, err)
				}
			}
		}}
	}
	foreign := func(t *testing.T) *tls.Certificate {
		c, err := hostile.ForeignClientCert("app-1")
		if err != nil {
			t.Fatal(err)
		}
		return &c
	}
	return []hostileAttack{
		refusedHandshake("foreign-cert", foreign, peerTCPALPN),
		refusedHandshake("user-cert", func(t *testing.T) *tls.Certificate { return e.userCert(t, e.mallory) }, peerTCPALPN),
		refusedHandshake("no-cert", func(*testing.T) *tls.Certificate { return nil }, peerTCPALPN),
		refusedHandshake("wrong-alpn", func(t *testing.T) *tls.Certificate { return e.userCert(t, e.mallory) }, "tunnel-peer/1"),
	}
}

func hostileChunks(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		k := min(n, len(b))
		out = append(out, b[:k])
		b = b[k:]
	}
	return out
}

func hostileRepeat(n int, f func() []byte) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = f()
	}
	return out
}

// quicAttacks are the attacks on the gateway's QUIC listener, from src;
// those of an authenticated user from authSrc.
func (e *hostileEnv) quicAttacks(src, authSrc string) []hostileAttack {
	foreign, ferr := hostile.ForeignClientCert("mallory")
	quicConf := func() *quic.Config {
		return &quic.Config{HandshakeIdleTimeout: 10 * time.Second, MaxIdleTimeout: 30 * time.Second}
	}
	// connectClose does a handshake with a foreign certificate and closes
	// at once.
	connectClose := func() error {
		if ferr != nil {
			return ferr
		}
		_, closeConn, err := e.quicDial(src, &foreign, wire.ALPN, quicConf())
		if err == nil {
			closeConn()
		}
		return err
	}
	// refused waits for the gateway to end conn, and returns why.
	refused := func(t *testing.T, conn *quic.Conn) error {
		select {
		case <-conn.Context().Done():
			return context.Cause(conn.Context())
		case <-time.After(15 * time.Second):
			t.Errorf("the gateway kept the connection open for 15s; want it refused")
			return nil
		}
	}
	remote := func(err error) bool {
		var te *quic.TransportError
		var ae *quic.ApplicationError
		return errors.As(err, &te) && te.Remote || errors.As(err, &ae) && ae.Remote
	}
	send := func(packets func() [][]byte) func(t *testing.T) {
		return func(t *testing.T) {
			if _, err := hostile.SendUDP(src, e.c.addr, packets()); err != nil {
				t.Errorf("send: %v", err)
			}
		}
	}
	return []hostileAttack{
		{"connect-close", func(t *testing.T) {
			if err := connectClose(); err != nil {
				t.Errorf("a handshake with a foreign certificate failed: %v; want it to complete (the gateway verifies after it)", err)
			}
		}},
		{fmt.Sprintf("connect-close-%d", hostileQUICFlood), func(t *testing.T) {
			var mu sync.Mutex
			failed, first := 0, error(nil)
			var wg sync.WaitGroup
			next := make(chan struct{})
			for range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range next {
						if err := connectClose(); err != nil {
							mu.Lock()
							failed++
							if first == nil {
								first = err
							}
							mu.Unlock()
						}
					}
				}()
			}
			for range hostileQUICFlood {
				next <- struct{}{}
			}
			close(next)
			wg.Wait()
			t.Logf("%d handshakes, %d failed (%v)", hostileQUICFlood, failed, first)
		}},
		{"garbage", send(func() [][]byte { return hostileChunks(hostile.Garbage(4096), 1024) })},
		{"initial-junk", send(func() [][]byte { return hostileRepeat(10, hostile.InitialJunk) })},
		{"foreign-cert", func(t *testing.T) {
			if ferr != nil {
				t.Fatal(ferr)
			}
			conn, closeConn, err := e.quicDial(src, &foreign, wire.ALPN, quicConf())
			if err != nil {
				t.Fatalf("the handshake failed: %v; want it to complete and the gateway to refuse the certificate with a reason", err)
			}
			defer closeConn()
			err = refused(t, conn)
			var ae *quic.ApplicationError
			if !errors.As(err, &ae) || !ae.Remote || ae.ErrorCode != transport.CodeUnauthorized {
				t.Errorf("connection with a self-signed certificate ended with %v; want the gateway to close it as unauthorized (code %#x)", err, transport.CodeUnauthorized)
			} else {
				t.Logf("refused: %v", err)
			}
		}},
		{"wrong-alpn", func(t *testing.T) {
			conn, closeConn, err := e.quicDial(src, e.userCert(t, e.mallory), "h3", quicConf())
			if err == nil {
				defer closeConn()
				err = refused(t, conn)
			}
			if !remote(err) {
				t.Errorf("a handshake offering only ALPN h3 ended with %v; want the gateway to refuse it", err)
			} else {
				t.Logf("refused: %v", err)
			}
		}},
		{"no-cert", func(t *testing.T) {
			conn, closeConn, err := e.quicDial(src, nil, wire.ALPN, quicConf())
			if err == nil {
				defer closeConn()
				err = refused(t, conn)
			}
			if !remote(err) {
				t.Errorf("a handshake without a client certificate ended with %v; want the gateway to refuse it", err)
			} else {
				t.Logf("refused: %v", err)
			}
		}},
		{"half-handshake", func(t *testing.T) {
			h, err := hostile.NewUDPHold(src, e.c.addr, e.initials[1])
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			waitFor(t, 10*time.Second, "the gateway to answer a real Initial", func() bool { n, _ := h.Answers(); return n > 0 })
		}},
		{fmt.Sprintf("half-handshake-%d", hostileInitialFlood), func(t *testing.T) {
			if _, err := hostile.SendUDP(src, e.c.addr, e.initials[2:]); err != nil {
				t.Errorf("send: %v", err)
			}
			e.legit(t)
		}},
		{"silent", func(t *testing.T) { e.checkHeld(t, "quic/silent") }},
		{"stream-junk", func(t *testing.T) {
			// From a source of its own: the gateway rightly refuses new
			// handshakes from the one that just sent hundreds.
			conn, closeConn, err := e.quicDial(authSrc, e.userCert(t, e.mallory), wire.ALPN, transport.QUICConfig())
			if err != nil {
				t.Fatalf("a user's handshake: %v", err)
			}
			defer closeConn()
			for _, junk := range []struct {
				what string
				b    []byte
			}{
				{"4 KiB of random bytes", hostile.Garbage(4096)},
				{"a header announcing 65535 bytes", append([]byte{wire.Version, byte(wire.KindDial), 0xff, 0xff}, hostile.Garbage(2048)...)},
			} {
				st, err := conn.OpenStreamSync(context.Background())
				if err != nil {
					t.Logf("open a stream for %s: %v (the gateway closed the connection)", junk.what, err)
					break
				}
				_, _ = st.Write(junk.b)
				w := hostile.NewWatch(hostileStream{st})
				if w.WaitClosed(time.Now().Add(15 * time.Second)) {
					_, err, _ := w.Ended()
					t.Logf("%s: refused after %d bytes: %v", junk.what, w.Received(), err)
				} else {
					t.Errorf("a stream starting with %s is still open after 15s; want the gateway to refuse it", junk.what)
				}
				w.Close()
			}
		}},
		{"stream-silent", func(t *testing.T) { e.checkHeld(t, "quic/stream-silent") }},
		{"flood", send(func() [][]byte { return hostile.Flood(hostileDatagrams) })},
	}
}
