package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/quic-go/quic-go"
)

func TestGradeOf(t *testing.T) {
	fs := []Finding{ok("api", "a", "x"), warn("api", "b", B, "x", "y"), local(fail("udp", "c", F, "x", "y"))}
	if g := GradeOf(fs); g != B {
		t.Errorf("grade %s; want B (local findings do not count)", g)
	}
	if g := GradeOf(append(fs, fail("api", "d", D, "x", "y"), warn("api", "e", C, "x", "y"))); g != D {
		t.Errorf("grade %s; want D", g)
	}
	if g := GradeOf(nil); g != A {
		t.Errorf("grade %s; want A", g)
	}
	if !C.Below(B) || B.Below(B) || A.Below(F) {
		t.Error("Below is wrong")
	}
	for _, s := range []string{"a", "B", " f "} {
		if _, err := ParseGrade(s); err != nil {
			t.Errorf("ParseGrade(%q): %v", s, err)
		}
	}
	if _, err := ParseGrade("E"); err == nil || !strings.Contains(err.Error(), "want one of A, B, C, D, F") {
		t.Errorf("ParseGrade(E): %v", err)
	}
}

func TestFetchedTrust(t *testing.T) {
	ca := newCA(t)
	cert := ca.leaf(t, 90*24*time.Hour, nil)
	apiAddr, quicAddr := startAPI(t, ca, cert, tls13()), startQUIC(t, cert)
	cfg := baseConfig(apiAddr, quicAddr, ca)
	cfg.CA = nil
	rep := run(t, cfg)
	f := want(t, rep, "trust.ca", Warn, "trusting the one the gateway itself sent")
	if f.Scope != Local || !strings.Contains(f.Fix, "--ca-pin "+rep.CAPin) {
		t.Errorf("trust finding %+v; want local with the pin to pass back", f)
	}
	want(t, rep, "cert.chain", OK, "verifies")
	if rep.Grade != A {
		t.Errorf("grade %s; want A (how the doctor trusts is not the gateway's grade)", rep.Grade)
	}

	cfg.Pin = rep.CAPin
	rep = run(t, cfg)
	want(t, rep, "trust.ca", OK, "matches --ca-pin")

	cfg.Pin = "sha256:" + strings.Repeat("00", 32)
	rep = run(t, cfg)
	want(t, rep, "trust.ca", Fail, "does not match --ca-pin")
	if rep.Grade != F {
		t.Errorf("grade %s; want F for a CA that is not the pinned one", rep.Grade)
	}
}

func TestClockSkew(t *testing.T) {
	ca := newCA(t)
	cert := ca.leaf(t, 90*24*time.Hour, nil)
	cfg := baseConfig(startAPI(t, ca, cert, tls13()), startQUIC(t, cert), ca)
	for _, tc := range []struct {
		offset time.Duration
		sev    Severity
		text   string
		grade  Grade
	}{
		{time.Minute, Warn, "the gateway's clock is 1m0s behind this machine's", B},
		{-5 * time.Minute, Fail, "the gateway's clock is 5m0s ahead of this machine's", C},
	} {
		cfg.Now = func() time.Time { return time.Now().Add(tc.offset) }
		rep := run(t, cfg)
		want(t, rep, "clock.skew", tc.sev, tc.text)
		if rep.Grade != tc.grade {
			t.Errorf("offset %s: grade %s; want %s", tc.offset, rep.Grade, tc.grade)
		}
	}
}

func TestSkewFinding(t *testing.T) {
	sent := time.Date(2026, 1, 1, 12, 0, 0, 200e6, time.UTC)
	got := sent.Add(600 * time.Millisecond) // middle: 12:00:00.5
	if f := skewFinding(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC), sent, got); f.Severity != OK {
		t.Errorf("same second: %+v", f)
	}
	if f := skewFinding(time.Date(2026, 1, 1, 12, 0, 31, 0, time.UTC), sent, got); f.Severity != Warn || !strings.Contains(f.What, "31s ahead") {
		t.Errorf("31 s ahead: %+v", f)
	}
}

func TestUDPBuffersAreLocalAdvice(t *testing.T) {
	ca := newCA(t)
	cert := ca.leaf(t, 90*24*time.Hour, nil)
	cfg := baseConfig(startAPI(t, ca, cert, tls13()), startQUIC(t, cert), ca)
	cfg.Sysctl = func(name string) (int, error) {
		if name == "rmem_max" {
			return 212992, nil
		}
		return 0, errors.New("no such file")
	}
	rep := run(t, cfg)
	f := want(t, rep, "udp.rmem_max", Warn, "net.core.rmem_max on this machine is 212992 bytes, below the 7340032 QUIC asks for")
	if !strings.Contains(f.Fix, "sysctl -w net.core.rmem_max=7340032 net.core.wmem_max=7340032") || f.Scope != Local {
		t.Errorf("finding %+v", f)
	}
	want(t, rep, "udp.wmem_max", Info, "could not read")
	if rep.Grade != A {
		t.Errorf("grade %s; want A", rep.Grade)
	}
}

func TestUnreachableAPIStillRunsTheOtherChecks(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	ca := newCA(t)
	cert := ca.leaf(t, 90*24*time.Hour, nil)
	cfg := baseConfig(closed, startQUIC(t, cert), ca)
	rep := run(t, cfg)
	want(t, rep, "api.reachable", Fail, "cannot reach the API at "+closed+": dial tcp "+closed+": connect: connection refused")
	want(t, rep, "quic.reachable", OK, "answers")
	want(t, rep, "udp.rmem_max", OK, "bytes")
	want(t, rep, "clock.skew", Info, "could not read the gateway's clock")
	if rep.Grade != F {
		t.Errorf("grade %s; want F", rep.Grade)
	}
}

func TestQUICTimeout(t *testing.T) {
	// A UDP socket that reads and never answers: silence, not a refusal.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ca := newCA(t)
	cert := ca.leaf(t, 90*24*time.Hour, nil)
	cfg := baseConfig(startAPI(t, ca, cert, tls13()), pc.LocalAddr().String(), ca)
	cfg.Timeout = 2 * time.Second // the outcome does not depend on it, only the test's length
	rep := run(t, cfg)
	want(t, rep, "quic.reachable", Warn, "does not answer (timeout)")
}

func TestReportJSONIsStable(t *testing.T) {
	rep := Report{Schema: SchemaVersion, Gateway: "gw:8443", Grade: B, Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		Findings: []Finding{warn("api", "tls.version.1.2", B, "w", "f")}, CAPin: "sha256:00"}
	b, _ := json.Marshal(rep)
	const wantJSON = `{"schema":1,"gateway":"gw:8443","time":"2026-01-01T00:00:00Z","grade":"B","findings":[{"check":"api","id":"tls.version.1.2","severity":"warn","scope":"gateway","cap":"B","what":"w","fix":"f"}],"ca_pin":"sha256:00"}`
	if string(b) != wantJSON {
		t.Errorf("JSON\n%s\nwant\n%s", b, wantJSON)
	}
}

// srvServer answers _tunnel._udp.ZONE with one SRV record to target:port
// and its A record as glue.
func srvServer(t *testing.T, zone string, port uint16, addr string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		target := "gw1." + zone
		switch {
		case q.Question[0].Name != "_tunnel._udp."+zone:
			m.Rcode = dns.RcodeNameError
		case q.Question[0].Qtype == dns.TypeSRV:
			m.Answer = append(m.Answer, &dns.SRV{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: 30},
				Priority: 1, Weight: 1, Port: port, Target: target})
			m.Extra = append(m.Extra, &dns.A{Hdr: dns.RR_Header{Name: target, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30},
				A: netip.MustParseAddr(addr).AsSlice()})
		}
		_ = w.WriteMsg(m)
	})
	s := &dns.Server{PacketConn: pc, Handler: h}
	started := make(chan struct{})
	s.NotifyStartedFunc = func() { close(started) }
	done := make(chan error, 1)
	go func() { done <- s.ActivateAndServe() }()
	<-started
	t.Cleanup(func() {
		_ = s.ShutdownContext(context.Background())
		<-done
	})
	return pc.LocalAddr().String()
}

func TestDNSRecords(t *testing.T) {
	ca := newCA(t)
	cert := ca.leaf(t, 90*24*time.Hour, nil)
	apiAddr := startAPI(t, ca, cert, tls13())
	cfg := baseConfig(apiAddr, startQUIC(t, cert), ca)
	_, p, _ := net.SplitHostPort(apiAddr)
	port, _ := strconv.Atoi(p)
	const zone = "prod.tunnel.test."

	cfg.DNSZone, cfg.DNSServer = zone, srvServer(t, zone, uint16(port), "127.0.0.1")
	want(t, run(t, cfg), "dns.srv", OK, "lead to this gateway (127.0.0.1:"+p+")")

	cfg.DNSServer = srvServer(t, zone, uint16(port), "192.0.2.7")
	rep := run(t, cfg)
	want(t, rep, "dns.srv", Fail, "list 192.0.2.7:"+p+", not this gateway")
	if rep.Grade != C {
		t.Errorf("grade %s; want C", rep.Grade)
	}

	cfg.DNSZone = "other.test."
	rep = run(t, cfg)
	want(t, rep, "dns.srv", Fail, "_tunnel._udp.other.test do not resolve")
}

func TestQUICFindingReadsTheDialError(t *testing.T) {
	for _, tc := range []struct {
		err  error
		sev  Severity
		text string
	}{
		// The gateway refuses a handshake without a client certificate
		// (alert 116, certificate_required): it answered, so it is reachable.
		{&quic.TransportError{Remote: true, ErrorCode: 0x100 + 116}, OK, "answers (it refused the doctor's anonymous handshake"},
		{&quic.ApplicationError{Remote: true, ErrorCode: 1}, OK, "answers"},
		{&quic.TransportError{Remote: false, ErrorCode: 0x100 + 120}, Fail, "the TLS handshake failed"},
		{&quic.IdleTimeoutError{}, Warn, "does not answer (timeout)"},
		{&quic.HandshakeTimeoutError{}, Warn, "does not answer (timeout)"},
		{fmt.Errorf("write: %w", syscall.ECONNREFUSED), Fail, "is refused: nothing listens"},
		{errors.New("something else"), Warn, "could not be reached: something else"},
	} {
		f := quicFinding("gw:8443", tc.err)
		if f.Severity != tc.sev || !strings.Contains(f.What, tc.text) {
			t.Errorf("%T %v: %s %q; want %s containing %q", tc.err, tc.err, f.Severity, f.What, tc.sev, tc.text)
		}
	}
}
