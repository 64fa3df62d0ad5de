package doctor

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tunnelhq/tunnel/pkg/panics"
)

// DefaultTimeout bounds each probe (one TCP or TLS handshake, one QUIC
// handshake, one SSH banner, one DNS query).
const DefaultTimeout = 10 * time.Second

// SchemaVersion is the version of the Report JSON; it changes only if a
// field changes meaning (fields are added without a change).
const SchemaVersion = 1

// Config says what to examine.
type Config struct {
	// API is the gateway's HTTPS API, HOST:PORT.
	API string
	// ServerName is the name the certificate must cover (default: API's
	// host).
	ServerName string
	// QUIC is the gateway's UDP address (default: API, the gateway's
	// default of one port for both).
	QUIC string
	// SSH is the jump host, HOST:PORT; empty skips the SSH check.
	SSH string
	// DNSZone, if set, is the zone whose SRV records (_tunnel._udp.ZONE)
	// must lead to the gateway; DNSServer is the server to ask ("" is
	// this machine's resolvers).
	DNSZone, DNSServer string
	// CA is the cluster CA (one or more certificates). Empty: the CA is
	// fetched from the gateway's /v1/ca (and checked against Pin when
	// set), with a finding saying so.
	CA []*x509.Certificate
	// Pin (sha256:HEX) checks a fetched CA.
	Pin string
	// TrustSource says where CA came from, for the trust finding
	// ("the profile", "--ca FILE").
	TrustSource string
	// Timeout bounds each probe (DefaultTimeout).
	Timeout time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
	// Sysctl reads net.core values (default: /proc/sys/net/core/NAME).
	Sysctl func(name string) (int, error)
	// Log receives recovered panics (slog.Default).
	Log *slog.Logger
}

// Report is the outcome of Run: the grade and every finding, in a fixed
// order of checks.
type Report struct {
	Schema   int       `json:"schema"`
	Gateway  string    `json:"gateway"`
	Time     time.Time `json:"time"`
	Grade    Grade     `json:"grade"`
	Findings []Finding `json:"findings"`
	// CAPin is the pin of the cluster CA the doctor trusted, so that a
	// cron job can pass it back with --ca-pin.
	CAPin string `json:"ca_pin,omitempty"`
}

type runner struct {
	cfg   Config
	roots *x509.CertPool // nil: no trust anchor
	pin   string
	clock []Finding // written by checkTrust before the other checks start
}

func (r *runner) now() time.Time { return r.cfg.Now() }

// Run examines the gateway described by cfg. Every check runs, each
// bounded by its own deadline; ctx ends them all early.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if _, _, err := net.SplitHostPort(cfg.API); err != nil {
		return Report{}, fmt.Errorf("gateway address %q: want HOST:PORT", cfg.API)
	}
	host, _, _ := net.SplitHostPort(cfg.API)
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	if cfg.QUIC == "" {
		cfg.QUIC = cfg.API
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sysctl == nil {
		cfg.Sysctl = readSysctl
	}
	r := &runner{cfg: cfg}
	rep := Report{Schema: SchemaVersion, Gateway: cfg.API, Time: cfg.Now().UTC()}

	// Trust first (the API check needs the roots); it also measures the
	// clock from the same HTTP answer.
	trustF := r.safely(ctx, "trust", r.checkTrust)
	checks := []struct {
		name string
		fn   func(context.Context) []Finding
	}{
		{"api", r.checkAPI},
		{"quic", r.checkQUIC},
		{"udp", r.checkUDPBuffers},
		{"ssh", r.checkSSH},
		{"dns", r.checkDNS},
	}
	results := make([][]Finding, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() { results[i] = r.safely(ctx, c.name, c.fn) })
	}
	wg.Wait()
	rep.Findings = append(rep.Findings, trustF...)
	rep.Findings = append(rep.Findings, results[0]...)
	rep.Findings = append(rep.Findings, r.clockFindings()...)
	for _, res := range results[1:] {
		rep.Findings = append(rep.Findings, res...)
	}
	rep.Grade = GradeOf(rep.Findings)
	rep.CAPin = r.pin
	return rep, nil
}

// safely runs one check; a panic becomes a finding of that check.
func (r *runner) safely(ctx context.Context, name string, fn func(context.Context) []Finding) (out []Finding) {
	defer func() {
		if v := recover(); v != nil {
			panics.Report(r.cfg.Log, "doctor check "+name, v, debug.Stack())
			out = []Finding{local(fail(name, name+".internal", "", fmt.Sprintf("the %s check failed with an internal error (%v)", name, v),
				"report this as a bug in tunnel doctor; the other checks ran"))}
		}
	}()
	return fn(ctx)
}

func readSysctl(name string) (int, error) {
	b, err := os.ReadFile("/proc/sys/net/core/" + name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
