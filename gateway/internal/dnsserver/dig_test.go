package dnsserver

import (
	"net"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/time/rate"

	"github.com/tunnelhq/tunnel/pkg/testenv"
)

// TestDigInterop asks the server with ISC dig, a real client, over TCP and
// UDP, including a truncated UDP answer that dig retries over TCP.
func TestDigInterop(t *testing.T) {
	dig := testenv.LookPath(t, "dig")
	r := start(t, &Server{RateLimit: rate.Inf})
	host, port, _ := net.SplitHostPort(r.addr)
	run := func(args ...string) string {
		t.Helper()
		all := append([]string{"@" + host, "-p", port, "+time=10", "+tries=1", "+norecurse"}, args...)
		out, err := exec.Command(dig, all...).CombinedOutput()
		if err != nil {
			t.Fatalf("dig %s: %v\n%s", strings.Join(all, " "), err, out)
		}
		return string(out)
	}
	srvLine := regexp.MustCompile(`(?m)^_tunnel\._udp\.prod\.tunnel\.test\.\s+30\s+IN\s+SRV\s+0 10 7443 gw-gw1\.prod\.tunnel\.test\.$`)
	for _, transport := range []string{"+tcp", "+notcp"} {
		out := run("SRV", "_tunnel._udp."+zone, transport)
		for _, want := range []string{"status: NOERROR", "flags: qr aa;", "ANSWER: 2,", "gw-gw2.prod.tunnel.test. 30 IN AAAA 2001:db8::2"} {
			if !strings.Contains(strings.Join(strings.Fields(out), " "), want) {
				t.Errorf("dig %s output lacks %q:\n%s", transport, want, out)
			}
		}
		if !srvLine.MatchString(out) {
			t.Errorf("dig %s output lacks the SRV record of gw1:\n%s", transport, out)
		}
		if strings.Contains(out, "WARNING") {
			t.Errorf("dig %s warns:\n%s", transport, out)
		}
	}

	out := run("A", "nope."+zone)
	if !strings.Contains(out, "status: NXDOMAIN") || !regexp.MustCompile(`(?m)AUTHORITY SECTION:\n`+regexp.QuoteMeta(zone)+`\s+30\s+IN\s+SOA`).MatchString(out) {
		t.Errorf("dig A nope: want NXDOMAIN with the SOA in authority:\n%s", out)
	}
	out = run("A", "example.com.")
	if !strings.Contains(out, "status: REFUSED") {
		t.Errorf("dig A example.com: want REFUSED:\n%s", out)
	}

	// 40 gateways do not fit in 512 bytes: dig sees TC and retries over TCP.
	r.src.set(manyGateways(40), nil)
	r.clock.Advance(DefaultCacheFor)
	out = run("SRV", "_tunnel._udp."+zone, "+notcp", "+noedns")
	if !strings.Contains(out, "Truncated, retrying in TCP mode") || !strings.Contains(out, "ANSWER: 40,") {
		t.Errorf("dig over UDP without EDNS0, 40 gateways: want a TCP retry and 40 answers:\n%s", out)
	}
}
