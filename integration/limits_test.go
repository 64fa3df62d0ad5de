package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/testenv"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

// The limits the gateway puts on callers not yet authenticated (issue 7,
// class 2), driven against the real binary the way an attacker would:
// floods of silent connections, stalled handshakes, bursts of anonymous
// requests and of QUIC handshakes with a foreign certificate.

// limitsDialer dials from 127.0.0.n: every 127/8 address is local on
// Linux, so one machine plays several sources.
func limitsDialer(n byte) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, n)}, Timeout: 10 * time.Second}
}

// limitsFlood keeps up to hold silent TCP connections open from src to
// addr until stop is called, replacing those the gateway closes; it
// returns how many connections it opened.
func limitsFlood(t *testing.T, src *net.Dialer, addr string, hold int) (stop func() int) {
	t.Helper()
	if c, err := src.Dial("tcp", addr); err != nil {
		testenv.Missing(t, "a local source address %v (every 127/8 address is local on Linux): %v", src.LocalAddr, err)
	} else {
		c.Close()
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	var opened int
	wg.Add(1)
	go func() {
		defer wg.Done()
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			select {
			case <-done:
				return
			default:
			}
			c, err := src.Dial("tcp", addr)
			if err != nil {
				time.Sleep(time.Millisecond) // reset before connect returned
				continue
			}
			opened++
			conns = append(conns, c)
			if len(conns) > hold {
				conns[0].Close()
				conns = conns[1:]
			}
		}
	}()
	return func() int {
		close(done)
		wg.Wait()
		return opened
	}
}

var limitsRefusedRE = regexp.MustCompile(`refused connections: per-source cap reached.* listener=API refused=(\d+)`)

// TestLimitsSilentFloodDoesNotStopLogin: thousands of silent connections
// to the API from one source (127.0.0.2) get that source's share and no
// more; a person on the same machine (127.0.0.1) still logs in. Without
// the per-source cap the flood would fill the total budget and the login
// would be refused. The refusals are logged in aggregate, not one line
// each.
func TestLimitsSilentFloodDoesNotStopLogin(t *testing.T) {
	c := startCluster(t, "--max-conns-per-source", "20", "--max-conns", "60")
	stop := limitsFlood(t, limitsDialer(2), c.addr, 500)
	waitFor(t, 30*time.Second, "the gateway to refuse connections of the flood", func() bool {
		return strings.Contains(c.log.String(), "refusing connections")
	})
	admin := c.adminUser()
	admin.login()
	if out := admin.must("status"); !strings.Contains(out, "alice") {
		t.Errorf("tunnel status after login during the flood: %q; want alice", out)
	}
	opened := stop()
	if err := c.stop(); err != nil {
		t.Fatalf("gateway exit: %v", err)
	}
	log := c.log.String()
	lines := limitsLines(log, "refusing connections") + limitsLines(log, "refused connections")
	m := limitsRefusedRE.FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no summary of the refused connections in the log")
	}
	refused, _ := strconv.Atoi(m[1])
	t.Logf("flood: %d connections opened, %d refused (after the first), %d log lines about it", opened, refused, lines)
	if refused < 50 {
		t.Errorf("only %d connections refused; the flood did not press (opened %d)", refused, opened)
	}
	if lines > 4 {
		t.Errorf("%d log lines about refused connections; want them summarised (at most 4)", lines)
	}
	// The accepted silent connections end in TLS handshake errors, which
	// net/http would print one by one: summarised too.
	if n := limitsLines(log, "TLS handshake error"); n > 2 {
		t.Errorf("%d log lines about TLS handshake errors; want at most 2 (the first, and a summary)", n)
	}
}

// limitsLines counts the lines of log that hold substr.
func limitsLines(log, substr string) int {
	n := 0
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// TestLimitsStalledHandshakeClosed: a TCP connection to the API that
// says nothing, and one that stops in the middle of its TLS ClientHello,
// are closed by the gateway after --handshake-timeout.
func TestLimitsStalledHandshakeClosed(t *testing.T) {
	c := startCluster(t, "--handshake-timeout", "2s")
	half := []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}
	for _, tt := range []struct {
		name string
		send []byte
	}{{"silent", nil}, {"half a ClientHello", half}} {
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(tt.send); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_ = conn.SetReadDeadline(time.Now().Add(25 * time.Second))
		_, err = io.Copy(io.Discard, conn)
		conn.Close()
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Errorf("%s: the gateway kept the connection open for 25s; want it closed after the 2s handshake timeout", tt.name)
			continue
		}
		t.Logf("%s: closed after %v", tt.name, time.Since(start).Round(time.Millisecond))
	}
	// The gateway is unharmed.
	c.adminUser().login()
}

// limitsForeignCert is a client certificate of no cluster.
func limitsForeignCert(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "mallory"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

type limitsEvent struct {
	Type     string            `json:"type"`
	Reason   string            `json:"reason"`
	SourceIP string            `json:"source_ip"`
	Details  map[string]string `json:"details"`
}

// limitsDenials returns, for each reason, the agent.denied events from
// 127.0.0.1 and the refusals they stand for (1, or their count).
func limitsDenials(t *testing.T, admin *user) (rows, total map[string]int) {
	t.Helper()
	var evs []limitsEvent
	if err := json.Unmarshal([]byte(admin.must("admin", "audit", "ls", "--json")), &evs); err != nil {
		t.Fatal(err)
	}
	rows, total = map[string]int{}, map[string]int{}
	for _, e := range evs {
		if e.Type != "agent.denied" || e.SourceIP != "127.0.0.1" {
			continue
		}
		n := 1
		if c, ok := e.Details["count"]; ok {
			n, _ = strconv.Atoi(c)
		}
		rows[e.Reason]++
		total[e.Reason] += n
	}
	return rows, total
}

// TestLimitsAnonymousBurstsYieldFewAuditRows: a burst of unauthenticated
// renewals is rate-limited (429 past the budget, nothing written), and
// the refusals that get through, like a burst of QUIC handshakes with a
// foreign certificate, are folded: a couple of audit rows whose counts
// add up to the refusals the attacker saw.
func TestLimitsAnonymousBurstsYieldFewAuditRows(t *testing.T) {
	c := startCluster(t, "--audit-fold-interval", "2s")
	admin := c.adminUser()
	admin.login() // before the burst spends this source's anonymous budget

	const burst = 300
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: trust.PinnedClientConfig(c.pin, "localhost", nil)}}
	defer client.CloseIdleConnections()
	statuses := map[int]int{}
	for range burst {
		resp, err := client.Post("https://"+c.addr+api.PathRenew, "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		statuses[resp.StatusCode]++
	}
	if statuses[401]+statuses[429] != burst || statuses[429] == 0 {
		t.Fatalf("statuses of %d anonymous renewals: %v; want 401s, then 429s past the budget", burst, statuses)
	}

	const handshakes = 100
	cert := limitsForeignCert(t)
	tlsCfg := transport.ClientTLS(trust.PinnedClientConfig(c.pin, "localhost", nil),
		func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil })
	refused := 0
	for range handshakes {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		conn, err := quic.DialAddr(ctx, c.addr, tlsCfg, transport.QUICConfig())
		if err != nil {
			cancel()
			t.Fatalf("QUIC handshake with a foreign certificate: %v", err)
		}
		select {
		case <-conn.Context().Done():
		case <-ctx.Done():
			t.Fatal("the gateway did not close a connection with a foreign certificate within 30s")
		}
		cancel()
		var ae *quic.ApplicationError
		if errors.As(context.Cause(conn.Context()), &ae) && ae.ErrorMessage == "your certificate was not issued by this cluster" {
			refused++
		}
	}
	if refused != handshakes {
		t.Fatalf("%d of %d connections with a foreign certificate refused with the reason", refused, handshakes)
	}

	const renewReason = "renewal needs the agent's current certificate; an agent without one enrols with a join token"
	const quicReason = "your certificate was not issued by this cluster"
	var rows, total map[string]int
	waitFor(t, 30*time.Second, "the folded refusals in the audit log", func() bool {
		rows, total = limitsDenials(t, admin)
		return total[renewReason] == statuses[401] && total[quicReason] == handshakes
	})
	t.Logf("%d renewals (%d refused, %d rate-limited) and %d handshakes: audit rows %v", burst, statuses[401], statuses[429], handshakes, rows)
	for _, reason := range []string{renewReason, quicReason} {
		if rows[reason] > 2 {
			t.Errorf("%d audit rows for %q; want at most 2 (the first, and one with the count)", rows[reason], reason)
		}
	}
}
