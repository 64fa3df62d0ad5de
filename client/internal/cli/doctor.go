package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/discovery"
	"github.com/tunnelhq/tunnel/pkg/doctor"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

// doctorOpts are the flags of tunnel doctor.
type doctorOpts struct {
	gateway, ssh, quic string
	caFile, caPin      string
	dnsZone, dnsServer string
	minGrade           string
	timeout            time.Duration
	asJSON             bool
}

func newDoctorCmd(env Env) *cobra.Command {
	var o doctorOpts
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Grade the gateway's TLS, QUIC, SSH, clock and DNS from the outside",
		Long: `tunnel doctor examines the gateway's own endpoints the way SSL Labs grades a
web server, and prints a grade (A to F) and one line per finding with what
to do: the API's TLS versions and cipher suites (only a TLS 1.3-only API
gets an A), its certificate (chain to the cluster CA, names, days to
expiry, key, signature), the QUIC port, this machine's UDP buffers, the
jump host's SSH algorithms (no CBC, no SHA-1, strict key exchange against
Terrapin), the clock skew, and the SRV records of --dns-zone.

It needs no login. It checks the gateway of the current profile unless
--gateway is given, and trusts the cluster CA of the profile, or --ca, or
the one the gateway sends (checked against --ca-pin when given). It exits
with status 1 when the grade is below --min-grade, so that a cron job can
alert: see docs/DOCTOR.md.`,
		Example: `  tunnel doctor
  tunnel doctor --gateway gw.example.com:8443 --ca-pin sha256:HEX --ssh gw.example.com:2222
  tunnel doctor --json --min-grade A`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDoctor(cmd.Context(), env, cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.gateway, "gateway", "", "the gateway's API, HOST:PORT or srv:ZONE (default: the profile's)")
	f.StringVar(&o.ssh, "ssh", "", "the jump host, HOST:PORT (default: from the gateway list when logged in as an admin)")
	f.StringVar(&o.quic, "quic", "", "the gateway's QUIC address, HOST:PORT (default: the gateway list's, or the API's)")
	f.StringVar(&o.caFile, "ca", "", "PEM file of the cluster CA (default: the profile's, or the one the gateway sends)")
	f.StringVar(&o.caPin, "ca-pin", "", "pin (sha256:HEX) the CA the gateway sends must match, when no CA file is used")
	f.StringVar(&o.dnsZone, "dns-zone", "", "check the SRV records _tunnel._udp.ZONE lead to the gateway")
	f.StringVar(&o.dnsServer, "dns-server", "", "DNS server HOST:PORT for --dns-zone (default: this machine's resolvers)")
	f.StringVar(&o.minGrade, "min-grade", string(doctor.B), "exit with status 1 when the grade is below this (A, B, C, D or F)")
	f.DurationVar(&o.timeout, "timeout", doctor.DefaultTimeout, "bound on each probe")
	f.BoolVar(&o.asJSON, "json", false, "print the report as JSON (docs/DOCTOR.md)")
	return cmd
}

func runDoctor(ctx context.Context, env Env, out io.Writer, o doctorOpts) error {
	minGrade, err := doctor.ParseGrade(o.minGrade)
	if err != nil {
		return fmt.Errorf("--min-grade: %w", err)
	}
	if o.caPin != "" {
		if o.caPin, err = trust.ParsePin(o.caPin); err != nil {
			return err
		}
	}
	cfg, err := doctorConfig(ctx, env, o)
	if err != nil {
		return err
	}
	rep, err := doctor.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if o.asJSON {
		err = printJSON(out, rep)
	} else {
		err = printDoctor(out, rep)
	}
	if err != nil {
		return err
	}
	if rep.Grade.Below(minGrade) {
		return fmt.Errorf("grade %s is below --min-grade %s: fix the findings above", rep.Grade, minGrade)
	}
	return nil
}

// doctorConfig settles what to examine and which CA to trust, from the
// flags and, when there is one, the profile (a login is not needed).
func doctorConfig(ctx context.Context, env Env, o doctorOpts) (doctor.Config, error) {
	cfg := doctor.Config{SSH: o.ssh, QUIC: o.quic, DNSZone: o.dnsZone, DNSServer: o.dnsServer,
		Pin: o.caPin, Timeout: o.timeout, Now: env.Now}
	var p profile.Profile
	var dir profile.Dir
	hasProfile := false
	if d, err := profile.Open(); err == nil {
		if lp, err := d.Load(); err == nil && lp.Gateway != "" {
			dir, p, hasProfile = d, lp, true
		}
	}
	gw := o.gateway
	if gw == "" {
		if !hasProfile {
			return cfg, errors.New("no gateway to examine: give --gateway HOST:PORT (or log in first)")
		}
		gw = p.Gateway
		if cfg.DNSServer == "" {
			cfg.DNSServer = p.DNSServer
		}
	}
	// srv:ZONE: examine the first gateway DNS lists, and check the zone.
	if zone, isSRV, err := discovery.ParseGateway(gw); err != nil {
		return cfg, err
	} else if isSRV {
		rctx, cancel := context.WithTimeout(ctx, resolveTimeout)
		gws, _, err := discovery.Resolve(rctx, zone, cfg.DNSServer)
		cancel()
		if err != nil || len(gws) == 0 {
			return cfg, fmt.Errorf("find the gateways of %s in DNS: %v (check --dns-server, or give --gateway HOST:PORT)", gw, err)
		}
		if cfg.DNSZone == "" {
			cfg.DNSZone = zone
		}
		gw = gws[0]
	} else if i := strings.IndexByte(gw, ','); i >= 0 {
		gw = strings.TrimSpace(gw[:i]) // the first of a list: run once per gateway to check them all
	}
	if _, _, err := net.SplitHostPort(gw); err != nil {
		return cfg, fmt.Errorf("--gateway %q: want HOST:PORT", gw)
	}
	cfg.API = gw
	// The profile's gateways share its CA; another gateway is examined
	// without it unless --ca says otherwise.
	ours := hasProfile && (o.gateway == "" || slices.Contains(p.Gateways(), o.gateway))
	switch {
	case o.caFile != "":
		ca, err := readCA(o.caFile)
		if err != nil {
			return cfg, err
		}
		cfg.CA, cfg.TrustSource = ca, "--ca "+o.caFile
	case ours && o.caPin == "":
		if ca, err := readCA(dir.File(profile.CAFile)); err == nil {
			cfg.CA, cfg.TrustSource = ca, "the profile ("+dir.File(profile.CAFile)+")"
		} else if p.CAPin != "" {
			cfg.Pin = p.CAPin
		}
	}
	if cfg.SSH == "" || cfg.QUIC == "" {
		fromGatewayList(ctx, env, &cfg)
	}
	return cfg, nil
}

func readCA(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the cluster CA: %w", err)
	}
	ca, err := doctor.ParseCAs(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ca, nil
}

// fromGatewayList fills the jump host and QUIC addresses from the
// cluster's gateway list when the user is logged in as an admin (the
// public ping does not publish them). Anything else leaves them as they
// are: the SSH check then says it was skipped.
func fromGatewayList(ctx context.Context, env Env, cfg *doctor.Config) {
	s, err := loggedIn(env)
	if err != nil {
		return
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	var list api.GatewayList
	if err := s.call(ctx, http.MethodGet, api.PathAdminGateways, nil, nil, &list); err != nil {
		return
	}
	g, ok := matchGateway(list.Gateways, cfg.API)
	if !ok {
		return
	}
	if cfg.SSH == "" && g.SSHAddr != "" {
		cfg.SSH = sameHost(g.SSHAddr, cfg.API)
	}
	if cfg.QUIC == "" && g.QUICAddr != "" {
		cfg.QUIC = sameHost(g.QUICAddr, cfg.API)
	}
}

// matchGateway finds the gateway whose API address is addr, or failing
// that the only one on addr's port.
func matchGateway(gws []api.Gateway, addr string) (api.Gateway, bool) {
	_, port, _ := net.SplitHostPort(addr)
	var byPort []api.Gateway
	for _, g := range gws {
		if g.APIAddr == addr {
			return g, true
		}
		if _, p, _ := net.SplitHostPort(g.APIAddr); p == port {
			byPort = append(byPort, g)
		}
	}
	if len(byPort) == 1 {
		return byPort[0], true
	}
	return api.Gateway{}, false
}

// sameHost returns addr with the host the user reaches the API at, when
// addr is a wildcard listen address (":2222", "[::]:2222").
func sameHost(addr, api string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		apiHost, _, _ := net.SplitHostPort(api)
		return net.JoinHostPort(apiHost, port)
	}
	return addr
}

// printDoctor prints the grade line, then one line per finding: severity,
// check, what was seen and, for a problem, what to do.
func printDoctor(w io.Writer, rep doctor.Report) error {
	fmt.Fprintf(w, "grade %s  %s  (%s)\n", rep.Grade, rep.Gateway, rep.Time.Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, f := range rep.Findings {
		line := f.What
		if f.Fix != "" {
			line += ": " + f.Fix
		}
		scope := ""
		if f.Scope == doctor.Local && (f.Severity == doctor.Warn || f.Severity == doctor.Fail) {
			scope = " (this machine; not graded)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s%s\n", strings.ToUpper(string(f.Severity)), f.Check, line, scope)
	}
	return tw.Flush()
}
