package cli

import (
	"bytes"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/doctor"
)

func TestDoctorGatewayListMatch(t *testing.T) {
	gws := []api.Gateway{
		{ID: "a", APIAddr: "10.0.0.1:8443", SSHAddr: "[::]:2222"},
		{ID: "b", APIAddr: "10.0.0.2:9443", SSHAddr: "10.0.0.2:2200"},
	}
	for _, tc := range []struct {
		addr, id, ssh string
	}{
		{"10.0.0.1:8443", "a", "10.0.0.1:2222"},
		{"gw-a.example.com:8443", "a", "gw-a.example.com:2222"}, // by port, the wildcard takes the asked host
		{"gw-b.example.com:9443", "b", "10.0.0.2:2200"},
	} {
		g, ok := matchGateway(gws, tc.addr)
		if !ok || g.ID != tc.id {
			t.Errorf("%s: matched %q, %v; want %s", tc.addr, g.ID, ok, tc.id)
			continue
		}
		if got := sameHost(g.SSHAddr, tc.addr); got != tc.ssh {
			t.Errorf("%s: SSH address %s; want %s", tc.addr, got, tc.ssh)
		}
	}
	if _, ok := matchGateway(append(gws, api.Gateway{ID: "c", APIAddr: "10.0.0.3:8443"}), "gw.example.com:8443"); ok {
		t.Error("matched one of two gateways on the same port by port alone")
	}
}

func TestPrintDoctor(t *testing.T) {
	rep := doctor.Report{Gateway: "gw:8443", Grade: doctor.B, Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Findings: []doctor.Finding{
			{Check: "api", ID: "tls.version.1.2", Severity: doctor.Warn, Scope: doctor.Gateway, Cap: doctor.B, What: "TLS 1.2 is offered", Fix: "serve TLS 1.3 only"},
			{Check: "udp", ID: "udp.rmem_max", Severity: doctor.Warn, Scope: doctor.Local, What: "rmem_max is low", Fix: "sysctl"},
			{Check: "api", ID: "cert.key", Severity: doctor.OK, Scope: doctor.Gateway, What: "Ed25519"},
		}}
	var b bytes.Buffer
	if err := printDoctor(&b, rep); err != nil {
		t.Fatal(err)
	}
	const want = `grade B  gw:8443  (2026-01-02T03:04:05Z)
WARN  api  TLS 1.2 is offered: serve TLS 1.3 only
WARN  udp  rmem_max is low: sysctl (this machine; not graded)
OK    api  Ed25519
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}
