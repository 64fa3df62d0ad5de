package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/gateway"
	"github.com/tunnelhq/tunnel/pkg/netguard"
	"github.com/tunnelhq/tunnel/pkg/version"
)

func newRunCmd() *cobra.Command {
	var cfg gateway.Config
	var logs logFlags
	var configFile string
	cmd := &cobra.Command{
		Use:   "run --data-dir DIR [--api-addr H:P]",
		Short: "Run the gateway",
		Long: `run serves the gateway's HTTPS API (TLS 1.3 only) until SIGINT or SIGTERM,
then shuts down gracefully.

The API's certificate is issued by the cluster CA for localhost, the
loopback addresses, this host's name and every --name; clients trust it
through the CA pin. --tls-cert and --tls-key serve an operator's certificate
instead, reloaded when the files change.

Before anyone authenticates, every stage has a deadline and a budget
(docs/SECURITY.md, "Limits before authentication"): --handshake-timeout,
--ssh-handshake-timeout, --max-conns-per-source, --max-conns, --login-rate
and --login-burst; repeated refusals (of anonymous and signed-in callers
alike) are folded into one audit event per --audit-fold-interval. Streams
are capped per caller and per session. The soft open-file limit is raised
to the hard limit at start.

Several gateways: run each with the same --store postgres://... and the same
KEK (copy the first gateway's kek file to the others' data directories, or
pass --kek-file), a unique --id (default: the host name), and
--advertise-addr if others reach it at another address than the one it
binds. Each records a heartbeat every --heartbeat-interval (listed by
tunnel admin gateways ls; not alive after three missed), and carries out at
once the revocations and access changes made on the others (PostgreSQL
LISTEN/NOTIFY), with a reconciliation every --reconcile-interval as a
safety net. TLS to the database: sslmode=verify-full&sslrootcert=CA.pem in
the URL; --store-insecure (dangerous) allows plaintext off loopback.

Every flag can also come from a YAML file (--config gateway.yaml, each key
a flag without its dashes) and, for secret paths, from the environment:
TUNNEL_GATEWAY_KEK_FILE, TUNNEL_GATEWAY_STORE_FILE (a file holding the
store URL), TUNNEL_GATEWAY_TLS_CERT_FILE, TUNNEL_GATEWAY_TLS_KEY_FILE. The
command line wins over the environment, which wins over the file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// The command line wins over TUNNEL_GATEWAY_* variables, which
			// win over the --config file.
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			if err := applyConfigFile(cmd.Flags(), configFile); err != nil {
				return err
			}
			log, err := logs.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			cfg.Log = log
			cfg.Version = version.Version
			return serve(cmd.Context(), cfg, cmd.OutOrStdout(), nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "", "the directory tunnel-gateway init created")
	f.StringVar(&cfg.APIAddr, "api-addr", ":8443", "the gateway's address: HTTPS on TCP and QUIC on UDP (host:port)")
	f.StringVar(&cfg.SSHAddr, "ssh-addr", "", "SSH jump host address for plain OpenSSH (ssh -J user@gateway:PORT), e.g. :2222; off when empty")
	f.StringVar(&cfg.QUICAddr, "quic-addr", "", "UDP address for agents and clients (default: --api-addr's host and port)")
	f.StringVar(&cfg.StoreSync, "store-sync", "normal", "when commits reach the disk: normal (survives a gateway crash) or full (fsync per commit; survives power loss, slower)")
	f.DurationVar(&cfg.IdleTimeout, "idle-timeout", 15*time.Minute, "close SSH sessions after this long without traffic (the user is told)")
	f.DurationVar(&cfg.AgentTTL, "agent-ttl", 0, "lifetime of agent certificates, renewed at 2/3 (default 24h, at most 7 days)")
	f.StringVar(&cfg.KEKFile, "kek-file", "", "key-encryption key file (default DIR/kek)")
	f.StringSliceVar(&cfg.Names, "name", nil, "extra host name or IP the gateway certificate is valid for (repeatable)")
	f.StringVar(&cfg.TLSCertFile, "tls-cert", "", "operator's PEM certificate chain for the API (reloaded on change)")
	f.StringVar(&cfg.TLSKeyFile, "tls-key", "", "operator's PEM private key for the API")
	f.IntVar(&cfg.Lockout.MaxFailures, "lockout-failures", 5, "consecutive failed logins that lock a user name out")
	f.DurationVar(&cfg.Lockout.LockoutFor, "lockout-duration", 15*time.Minute, "how long a lockout lasts")
	f.Float64Var(&cfg.LoginRate, "login-rate", 2, "anonymous requests per second allowed per source address")
	f.IntVar(&cfg.LoginBurst, "login-burst", 20, "burst of anonymous requests allowed per source address")
	f.IntVar(&cfg.MaxConnsPerSource, "max-conns-per-source", netguard.DefaultPerSource,
		"concurrent connections allowed per source address (IPv6: per /64) on the API and jump host together, and among QUIC connections not yet authenticated; the excess is closed at once")
	f.IntVar(&cfg.MaxConns, "max-conns", 0,
		"concurrent TCP connections allowed in all (API and jump host), and QUIC connections separately (default 80% of the open-file limit, at most 65536)")
	f.DurationVar(&cfg.HandshakeTimeout, "handshake-timeout", gateway.DefaultHandshakeTimeout,
		"close an API connection whose TLS handshake (or a request's headers) takes longer, and bound the QUIC handshake")
	f.DurationVar(&cfg.SSHHandshakeTimeout, "ssh-handshake-timeout", 0,
		"close a jump host connection not authenticated within this long (default 15s)")
	f.DurationVar(&cfg.SSHIdleConnTimeout, "ssh-idle-conn-timeout", 0,
		"close an authenticated jump host connection with no channel open for this long (default 15m)")
	f.DurationVar(&cfg.AuditFoldInterval, "audit-fold-interval", time.Minute,
		"write repeated refusals (same kind, caller, source and reason: failed enrolments, denied streams, non-admins on the admin API...) as one audit event with a count per interval")
	f.StringVar(&cfg.Store, "store", "", "PostgreSQL URL of the store the cluster's gateways share (default: SQLite in the data directory); use sslmode=verify-full&sslrootcert=CA.pem")
	f.BoolVar(&cfg.StoreInsecure, "store-insecure", false, "DANGEROUS: allow plaintext or unverified TLS to a PostgreSQL host other than loopback")
	f.StringVar(&cfg.ID, "id", "", "this gateway's id, unique in the cluster (default: the host name)")
	f.StringVar(&cfg.AdvertiseAddr, "advertise-addr", "", "host or host:port at which others reach this gateway (default: the bound addresses)")
	f.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", gateway.DefaultHeartbeatInterval, "how often this gateway records itself in the store; not alive after three missed")
	f.DurationVar(&cfg.ReconcileInterval, "reconcile-interval", gateway.DefaultReconcileInterval, "how often live access is checked against the store, besides the change notifications")
	f.StringVar(&cfg.DNSAddr, "dns-addr", "", "answer DNS (UDP and TCP) for --dns-zone here, e.g. :53: SRV _tunnel._udp.ZONE of the live gateways, so agents and clients can use --gateway srv:ZONE; off when empty")
	f.StringVar(&cfg.DNSZone, "dns-zone", "", "the zone --dns-addr answers for (authoritative, no recursion), e.g. prod.tunnel.example.com")
	f.StringArrayVar(&cfg.DNSNodes, "dns-node", nil, "publish a node in the zone: NAME=IP[,IP] (repeatable)")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve Prometheus metrics (/metrics), /healthz and /readyz over plain HTTP here, e.g. :9090 (see docs/METRICS.md); off when empty")
	f.StringVar(&cfg.AuditLog, "audit-log", "", "append every audit event of the cluster to this file, one JSON line each, for log shippers (0600; reopened on SIGHUP or when rotated; see docs/AUDIT-EXPORT.md); off when empty")
	f.StringVar(&cfg.DebugAddr, "debug-addr", "", "loopback address serving Go's runtime profiles (/debug/pprof/: goroutines, heap, CPU) without authentication, e.g. 127.0.0.1:6060; off when empty")
	vaultFlags(f, &cfg.Vault)
	f.StringVar(&cfg.Backup.Dir, "backup-dir", "", "write an encrypted backup of the store into this directory every --backup-every (docs/BACKUP.md); of several gateways with a schedule, one per period backs up")
	f.DurationVar(&cfg.Backup.Every, "backup-every", 24*time.Hour, "how often --backup-dir gets a backup")
	f.IntVar(&cfg.Backup.Keep, "backup-keep", gateway.DefaultBackupKeep, "how many backups --backup-dir keeps; older ones are removed")
	f.StringArrayVar(&cfg.Backup.Recipients, "backup-recipient", nil, "age public key (age1...) the scheduled backups are encrypted to (repeatable)")
	f.StringArrayVar(&cfg.Backup.RecipientFiles, "backup-recipients-file", nil, "file of age public keys the scheduled backups are encrypted to (repeatable)")
	f.StringVar(&configFile, "config", "", "YAML file of flag values: each key a flag of run without its dashes (api-addr: :8443); flags and TUNNEL_GATEWAY_* variables override it (see docs/OPERATOR.md)")
	logs.register(cmd)
	return cmd
}

// serve runs a gateway until ctx ends. ready, if set, is called once the
// gateway listens.
func serve(ctx context.Context, cfg gateway.Config, out io.Writer, ready func(*gateway.Gateway)) error {
	g, err := gateway.New(ctx, cfg)
	if err != nil {
		return err
	}
	if err := g.StartBackups(); err != nil {
		g.Close(context.Background())
		return err
	}
	cfg.Log.Info("gateway listening", "id", g.ID(), "api", g.Addr().String(), "cluster", g.Cluster(), "ca_pin", g.Pin(), "version", version.Version)
	fmt.Fprintf(out, "Gateway for cluster %q listening on %s (CA pin %s)\n", g.Cluster(), g.Addr(), g.Pin())
	if a := g.SSHAddr(); a != nil {
		fmt.Fprintf(out, "SSH jump host listening on %s\n", a)
	}
	if a := g.DNSAddr(); a != nil {
		fmt.Fprintf(out, "DNS for zone %s on %s (UDP and TCP)\n", cfg.DNSZone, a)
	}
	if a := g.DebugAddr(); a != nil {
		fmt.Fprintf(out, "Debug profiles (pprof) on http://%s/debug/pprof/\n", a)
	}
	if cfg.MetricsAddr != "" {
		ms, err := g.ListenMetrics(cfg.MetricsAddr)
		if err != nil {
			_ = g.Close(context.Background())
			return err
		}
		// Closed after the gateway: /readyz says "not ready" while it
		// shuts down.
		defer ms.Close()
		fmt.Fprintf(out, "Metrics on http://%s/metrics (health: /healthz, /readyz)\n", ms.Addr())
	}
	if ready != nil {
		ready(g)
	}
	errc := make(chan error, 1)
	go func() { errc <- g.Serve() }()
	select {
	case err = <-errc:
	case <-ctx.Done():
		cfg.Log.Info("shutting down")
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cerr := g.Close(sctx)
	if err == nil {
		err = <-errc
	}
	if err != nil {
		return err
	}
	return cerr
}
