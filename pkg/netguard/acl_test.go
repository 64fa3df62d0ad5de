package netguard

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// TestACLSemantics: deny wins; a listener with allow rules admits only
// what they match; rules apply to their listeners only; IPv4-mapped
// addresses count as IPv4.
func TestACLSemantics(t *testing.T) {
	a := NewACL(nil)
	defer a.Close()
	ip := netip.MustParseAddr
	if !a.Allowed(ip("203.0.113.9"), ScopeAPI) {
		t.Fatal("an ACL with no rules refused a source")
	}
	a.Set([]ACLRule{
		{Deny: true, Prefix: pfx("10.1.0.0/16"), Scope: ScopeAll},
		{Prefix: pfx("10.0.0.0/8"), Scope: ScopeAPI},
		{Prefix: pfx("2001:db8::/32"), Scope: ScopeAPI},
		{Deny: true, Prefix: pfx("198.51.100.7/32"), Scope: ScopeSSH},
	})
	cases := []struct {
		ip    string
		scope Scope
		want  bool
	}{
		{"10.2.3.4", ScopeAPI, true},         // allowed
		{"10.1.3.4", ScopeAPI, false},        // deny wins over the wider allow
		{"::ffff:10.2.3.4", ScopeAPI, true},  // mapped: the IPv4 rules
		{"::ffff:10.1.3.4", ScopeAPI, false}, // mapped, denied
		{"2001:db8::1", ScopeAPI, true},      // IPv6 allow
		{"2001:db9::1", ScopeAPI, false},     // not in the API's allow-list
		{"203.0.113.9", ScopeAPI, false},     // not in the API's allow-list
		{"203.0.113.9", ScopeQUIC, true},     // QUIC has no allow rule
		{"10.1.3.4", ScopeQUIC, false},       // the deny applies to all
		{"198.51.100.7", ScopeSSH, false},    // SSH-only deny
		{"198.51.100.7", ScopeQUIC, true},    // not on QUIC
		{"fe80::1%eth0", ScopeQUIC, true},    // a zone does not matter
		{"10.1.3.4", Scope(0), true},         // no listener: nothing applies
	}
	for _, c := range cases {
		if got := a.Allowed(ip(c.ip), c.scope); got != c.want {
			t.Errorf("Allowed(%s, %v) = %v; want %v", c.ip, c.scope, got, c.want)
		}
	}
	a.Set(nil)
	if !a.Allowed(ip("10.1.3.4"), ScopeAPI) {
		t.Error("after Set(nil) a source is still refused")
	}
}

// aclListen is a TCP listener on loopback behind an ACL, with an accept
// loop handing out what it accepted.
func aclListen(t *testing.T) (*ACL, net.Listener, chan net.Conn, *syncBuf) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log, buf := newLog()
	acl := NewACL(log)
	ln := acl.Listener(raw, ScopeAPI, "API")
	accepted := make(chan net.Conn, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		close(accepted)
		for c := range accepted {
			c.Close()
		}
		acl.Close()
	})
	return acl, ln, accepted, buf
}

func dialFrom(t *testing.T, ln net.Listener, from *net.TCPAddr) (net.Conn, error) {
	t.Helper()
	d := net.Dialer{LocalAddr: from, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// ended reports whether c's peer closed or reset it within a generous
// wait (a timeout means it is still open).
func ended(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := c.Read(make([]byte, 1))
	return err != nil && !isTimeout(err)
}

// TestACLListener: a denied source is reset at accept and never handed
// out, other sources are; a flood of refusals is logged once; a live
// connection from a source denied later is cut, others stay.
func TestACLListener(t *testing.T) {
	acl, ln, accepted, logs := aclListen(t)
	denied, other := loopback(t, 2), loopback(t, 3)
	acl.Set([]ACLRule{{Deny: true, Prefix: pfx("127.0.0.2/32"), Scope: ScopeAll}})

	const flood = 50
	for range flood {
		c, err := dialFrom(t, ln, denied)
		if err == nil && !ended(c) {
			t.Fatal("a connection from a denied source stayed open")
		}
	}
	waitFor(t, "the refusals", func() bool { return acl.Refused() == flood })
	c, err := dialFrom(t, ln, other)
	if err != nil {
		t.Fatal(err)
	}
	var srv net.Conn
	select {
	case srv = <-accepted:
	case <-time.After(10 * time.Second):
		t.Fatal("the allowed source's connection was not accepted")
	}
	if got := AddrIP(srv.RemoteAddr()); got != netip.MustParseAddr("127.0.0.3") {
		t.Fatalf("accepted a connection from %v; want only 127.0.0.3", got)
	}
	if n := logs.lines("refusing connections"); n != 1 {
		t.Errorf("%d log lines for %d refusals; want 1 (one per burst)\n%s", n, flood, logs)
	}

	// Live: a second allowed connection, then the rules come to refuse
	// 127.0.0.3 only on SSH (nothing cut), then on the API (both cut).
	c2, err := dialFrom(t, ln, other)
	if err != nil {
		t.Fatal(err)
	}
	srv2 := <-accepted
	if n := acl.Set([]ACLRule{{Deny: true, Prefix: pfx("127.0.0.3/32"), Scope: ScopeSSH}}); n != 0 {
		t.Fatalf("a rule for another listener cut %d connections", n)
	}
	if n := acl.Set([]ACLRule{{Prefix: pfx("127.0.0.1/32"), Scope: ScopeAPI}}); n != 2 {
		t.Fatalf("an allow-list without 127.0.0.3 cut %d connections; want 2", n)
	}
	for _, cc := range []net.Conn{c, c2} {
		if !ended(cc) {
			t.Error("a live connection from a newly refused source stayed open")
		}
	}
	srv.Close()
	srv2.Close()
	srv2.Close()
	waitFor(t, "closed connections forgotten", func() bool { return acl.Live() == 0 })
	acl.Close()
	if out := logs.String(); !strings.Contains(out, "refused="+strconv.Itoa(flood-1)) {
		t.Errorf("the summary lacks refused=%d:\n%s", flood-1, out)
	}
}

// TestACLQUIC: the QUIC hook refuses a denied source before calling the
// next hook; an admitted connection is tracked until its context ends,
// and its registered cut runs when its source is denied (at once if it
// already is).
func TestACLQUIC(t *testing.T) {
	acl := NewACL(nil)
	defer acl.Close()
	nextCalls := 0
	next := func(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
		nextCalls++
		return ctx, nil
	}
	cc := acl.ConnContext(ScopeQUIC, "QUIC", next)
	a := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1000}
	b := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 1000}
	acl.Set([]ACLRule{{Deny: true, Prefix: pfx("192.0.2.2/32"), Scope: ScopeQUIC}})
	if _, err := cc(context.Background(), &quic.ClientInfo{RemoteAddr: b}); !errors.Is(err, ErrDenied) {
		t.Fatalf("denied source: err %v; want ErrDenied", err)
	}
	if nextCalls != 0 {
		t.Error("the next hook ran for a denied source (it would take a slot)")
	}
	base, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx, err := cc(base, &quic.ClientInfo{RemoteAddr: a})
	if err != nil {
		t.Fatalf("allowed source: %v", err)
	}
	var mu sync.Mutex
	var reasons []string
	stop := CutOnDeny(ctx, func(r string) { mu.Lock(); reasons = append(reasons, r); mu.Unlock() })
	defer stop()
	acl.Set([]ACLRule{{Deny: true, Prefix: pfx("192.0.2.0/24"), Scope: ScopeAPI}})
	mu.Lock()
	if len(reasons) != 0 {
		t.Errorf("an API rule cut a QUIC connection")
	}
	mu.Unlock()
	acl.Set([]ACLRule{{Deny: true, Prefix: pfx("192.0.2.0/24"), Scope: ScopeAll}})
	mu.Lock()
	if len(reasons) != 1 || reasons[0] != ReasonDenied {
		t.Errorf("cut reasons %q; want one %q", reasons, ReasonDenied)
	}
	mu.Unlock()
	// Registered after the deny: runs at once.
	ran := false
	CutOnDeny(ctx, func(string) { ran = true })
	if !ran {
		t.Error("a cut registered for an already refused source did not run")
	}
	CutOnDeny(context.Background(), func(string) { t.Error("a cut ran for a context the ACL did not make") })()
	cancel()
	waitFor(t, "an ended QUIC connection forgotten", func() bool { return acl.Live() == 0 })
}

// TestACLRealQUIC: a real quic-go transport with the hook refuses a
// denied source's handshake, and admits another.
func TestACLRealQUIC(t *testing.T) {
	acl := NewACL(nil)
	defer acl.Close()
	acl.Set([]ACLRule{{Deny: true, Prefix: pfx("127.0.0.2/32"), Scope: ScopeQUIC}})
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp, ConnContext: acl.ConnContext(ScopeQUIC, "QUIC", nil)}
	defer tr.Close()
	srvTLS := testTLS(t)
	ln, err := tr.Listen(srvTLS, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The server registers how to cut each connection, as the relay does,
	// and otherwise keeps it open.
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			stop := CutOnDeny(c.Context(), func(reason string) { c.CloseWithError(0x10, reason) })
			context.AfterFunc(c.Context(), stop)
		}
	}()
	dialKeep := func(n byte) (*quic.Conn, error) {
		cu, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, n)})
		if err != nil {
			t.Fatal(err)
		}
		ctr := &quic.Transport{Conn: cu}
		t.Cleanup(func() { ctr.Close() })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return ctr.Dial(ctx, udp.LocalAddr(), clientTLS(srvTLS), &quic.Config{})
	}
	dial := func(n byte) error {
		cu, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, n)})
		if err != nil {
			t.Fatal(err)
		}
		ctr := &quic.Transport{Conn: cu}
		defer ctr.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := ctr.Dial(ctx, udp.LocalAddr(), clientTLS(srvTLS), &quic.Config{})
		if err == nil {
			c.CloseWithError(0, "")
		}
		return err
	}
	loopback(t, 2) // skips where 127/8 is not all local
	err = dial(2)
	var te *quic.TransportError
	if !errors.As(err, &te) || te.ErrorCode != quic.ConnectionRefused {
		t.Fatalf("dial from a denied source: %v; want CONNECTION_REFUSED", err)
	}
	if err := dial(3); err != nil {
		t.Fatalf("dial from an allowed source: %v", err)
	}
	// A live connection from 127.0.0.4, then 127.0.0.4 is denied: the
	// server's cut closes it, with the reason.
	live, err := dialKeep(4)
	if err != nil {
		t.Fatalf("dial from 127.0.0.4: %v", err)
	}
	waitFor(t, "the live connection tracked", func() bool { return acl.Live() == 1 })
	acl.Set([]ACLRule{{Deny: true, Prefix: pfx("127.0.0.4/32"), Scope: ScopeAll}})
	select {
	case <-live.Context().Done():
		var ae *quic.ApplicationError
		if err := context.Cause(live.Context()); !errors.As(err, &ae) || ae.ErrorMessage != ReasonDenied {
			t.Errorf("the cut connection ended with %v; want the reason %q", err, ReasonDenied)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a live QUIC connection from a newly denied source stayed open")
	}
	ln.Close()
	<-done
}

// testTLS is a server TLS config with a fresh self-signed certificate.
func testTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "acl-test"},
		DNSNames: []string{"acl-test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, NextProtos: []string{"acl-test"}}
}

// clientTLS trusts srv's certificate.
func clientTLS(srv *tls.Config) *tls.Config {
	pool := x509.NewCertPool()
	c, _ := x509.ParseCertificate(srv.Certificates[0].Certificate[0])
	pool.AddCert(c)
	return &tls.Config{RootCAs: pool, ServerName: "acl-test", NextProtos: []string{"acl-test"}}
}
