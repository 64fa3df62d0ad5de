// Package gateway assembles the gateway server: it creates a cluster
// ([Init]), and runs one ([New], [Gateway.Serve], [Gateway.Close]).
//
// The data directory (mode 0700) holds:
//
//	kek             the key-encryption key (hex, 0600) sealing every secret
//	gateway.db      the SQLite store (0600): users, roles, sealed CA keys, audit
//	quic-reset.key  the QUIC stateless reset key (0600)
//
// With a PostgreSQL store (--store postgres://...), the state lives in the
// database that every gateway of the cluster shares, and the data directory
// keeps only the KEK (unless --kek-file puts it elsewhere) and the reset
// key. Every gateway of a cluster needs the same KEK: copy the first
// gateway's to the others. Each gateway has an id (--id, the host name by
// default), announces itself in the store every HeartbeatInterval
// (heartbeat.go), and acts on the changes other gateways make (fanout.go).
//
// The command-line front end is gateway/internal/cli; tests drive this
// package directly or through the real binary.
package gateway

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/auditlog"
	"github.com/tunnelhq/tunnel/gateway/internal/auth"
	"github.com/tunnelhq/tunnel/gateway/internal/login"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/netguard"
	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// Names of files in the data directory.
const (
	KEKFile = "kek"
	DBFile  = "gateway.db"
	// ResetKeyFile holds the QUIC stateless reset key (0600): kept across
	// restarts so agents learn at once that a restarted gateway lost their
	// connection, instead of waiting for the idle timeout.
	ResetKeyFile = "quic-reset.key"
)

// DefaultCluster is the cluster name when none is given.
const DefaultCluster = "tunnel"

// DefaultHandshakeTimeout bounds the TLS and QUIC handshakes by default:
// far above what a real client needs, even across the world, and short
// enough that silent connections do not pile up.
const DefaultHandshakeTimeout = 10 * time.Second

// InitConfig says how to create a cluster.
type InitConfig struct {
	DataDir string
	// Cluster name; empty means DefaultCluster.
	Cluster string
	// KEKFile is where the key-encryption key lives; empty means
	// DataDir/kek. It is created if missing.
	KEKFile string
	// Admin, if set, is the first admin user, with AdminPassword.
	Admin         string
	AdminPassword string
	// MaxTTL is the cluster's certificate maximum; zero means 12 h.
	MaxTTL time.Duration
	// Store and StoreInsecure are as in Config.
	Store         string
	StoreInsecure bool
	// Vault, if its Addr is set, holds the cluster's keys (vault.go).
	Vault VaultConfig
	Clock func() time.Time
}

// InitResult is what Init reports.
type InitResult struct {
	Cluster string          `json:"cluster"`
	DataDir string          `json:"data_dir"`
	Pin     string          `json:"ca_pin"`
	Admin   *api.Enrollment `json:"admin,omitempty"`
}

// ErrInitialized is returned by Init for a data directory already in use.
var ErrInitialized = errors.New("this data directory already holds a cluster")

// Init creates the data directory, the key-encryption key, the store, the
// CA set and, optionally, the first admin (a role "admin" with the admin
// flag and a login of the admin's own name).
func Init(ctx context.Context, cfg InitConfig) (*InitResult, error) {
	now := time.Now
	if cfg.Clock != nil {
		now = cfg.Clock
	}
	if cfg.Cluster == "" {
		cfg.Cluster = DefaultCluster
	}
	cfg.Cluster = identity.CanonicalName(cfg.Cluster)
	if err := identity.ValidateName("cluster", cfg.Cluster); err != nil {
		return nil, err
	}
	var adminUser store.User
	var enr api.Enrollment
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	if err := os.Chmod(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	if err := checkStoreURL(cfg.Store); err != nil {
		return nil, err
	}
	so := storeOptions{dataDir: cfg.DataDir, url: cfg.Store, insecure: cfg.StoreInsecure}
	var st store.Store
	if cfg.Store == "" {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, DBFile)); err == nil {
			return nil, fmt.Errorf("%w (%s): use tunnel-gateway run, or choose an empty --data-dir", ErrInitialized, cfg.DataDir)
		}
	} else {
		// A shared store is checked before anything is created here.
		var err error
		if st, err = openStore(ctx, so); err != nil {
			return nil, err
		}
		defer st.Close()
		if err := alreadyInitialized(ctx, st, so); err != nil {
			return nil, err
		}
	}
	var sealer seal.Sealer
	var ca *certs.Authority
	var err error
	if cfg.Vault.Addr != "" {
		// The keys live in Vault: Transit keys for the KEK and the CAs.
		vc, err := openVault(ctx, cfg.Vault, slog.New(slog.DiscardHandler))
		if err != nil {
			return nil, err
		}
		defer vc.Close()
		vs, signers, err := vaultInit(ctx, vc, cfg.Cluster)
		if err != nil {
			return nil, fmt.Errorf("create the cluster's keys in Vault: %w", err)
		}
		sealer = vs
		if ca, err = certs.GenerateWith(certs.Config{Cluster: cfg.Cluster, MaxTTL: cfg.MaxTTL, Clock: cfg.Clock}, signers); err != nil {
			return nil, fmt.Errorf("create certificate authority: %w", err)
		}
	} else {
		kekPath := cfg.KEKFile
		if kekPath == "" {
			kekPath = filepath.Join(cfg.DataDir, KEKFile)
		}
		if _, err := os.Stat(kekPath); errors.Is(err, fs.ErrNotExist) {
			if err := seal.CreateKeyFile(kekPath, rand.Reader); err != nil {
				return nil, err
			}
		}
		if sealer, err = seal.NewKeyFileSealer(kekPath); err != nil {
			return nil, err
		}
		if ca, err = certs.Generate(certs.Config{Cluster: cfg.Cluster, MaxTTL: cfg.MaxTTL, Clock: cfg.Clock}); err != nil {
			return nil, fmt.Errorf("create certificate authority: %w", err)
		}
	}
	keys, err := ca.Export(sealer)
	if err != nil {
		return nil, fmt.Errorf("seal certificate authority: %w", err)
	}
	if cfg.Admin != "" {
		h, err := auth.NewHasher(auth.DefaultParams, 0)
		if err != nil {
			return nil, err
		}
		adminUser, enr, err = login.NewUser(ctx, h, sealer, "tunnel "+cfg.Cluster, cfg.Admin, cfg.AdminPassword, []string{"admin"}, now())
		if err != nil {
			return nil, fmt.Errorf("first admin: %w", err)
		}
	}
	if st == nil {
		if st, err = openStore(ctx, so); err != nil {
			return nil, err
		}
		defer st.Close()
	}
	meta := map[string]string{"cluster": cfg.Cluster, "created_at": now().UTC().Format(time.RFC3339)}
	if cfg.Vault.Addr != "" {
		meta["key_backend"] = "vault"
	}
	ev := audit.Event{Time: now(), Type: audit.ClusterInit, Actor: "system", Subject: cfg.Cluster,
		Outcome: audit.Success, Details: map[string]string{"ca_pin": ca.Pin()}}
	if err := st.Initialize(ctx, meta, keys, ev); err != nil {
		if errors.Is(err, store.ErrExists) {
			if cfg.Store != "" {
				return nil, alreadyInitialized(ctx, st, so)
			}
			return nil, fmt.Errorf("%w (%s)", ErrInitialized, cfg.DataDir)
		}
		return nil, storeError(err)
	}
	res := &InitResult{Cluster: cfg.Cluster, DataDir: cfg.DataDir, Pin: ca.Pin()}
	if cfg.Admin != "" {
		role := store.Role{Name: "admin", Logins: []string{adminUser.Name}, Admin: true, CreatedAt: now()}
		rev := audit.Event{Time: now(), Type: audit.RoleCreated, Actor: "system", Subject: "admin", Outcome: audit.Success}
		if err := st.CreateRole(ctx, role, rev); err != nil {
			return nil, fmt.Errorf("first admin role: %w", err)
		}
		uev := audit.Event{Time: now(), Type: audit.UserCreated, Actor: "system", Subject: adminUser.Name,
			Outcome: audit.Success, Details: map[string]string{"roles": "admin"}}
		if err := st.CreateUser(ctx, adminUser, uev); err != nil {
			return nil, fmt.Errorf("first admin: %w", err)
		}
		res.Admin = &enr
	}
	return res, nil
}

// alreadyInitialized says so if the shared store st already holds a
// cluster: the gateway should join it with the first gateway's KEK.
func alreadyInitialized(ctx context.Context, st store.Store, so storeOptions) error {
	cluster, err := st.GetMeta(ctx, "cluster")
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return storeError(err)
	}
	return fmt.Errorf("%w: the store at %s already holds cluster %q: copy the KEK file from the first gateway to this one and run tunnel-gateway run --store ... with it (there is nothing to init)",
		ErrInitialized, describeStore(so), cluster)
}

// Config says how to run a gateway. The zero value of every field but
// DataDir means its default.
type Config struct {
	DataDir string
	// KEKFile defaults to DataDir/kek.
	KEKFile string
	// APIAddr is the HTTPS listen address; default ":8443".
	APIAddr string
	// QUICAddr is the UDP address for agents and clients; default: the
	// host and port of APIAddr (TCP and UDP share the port).
	QUICAddr string
	// SSHAddr, if set, is where the SSH jump host listens (plain OpenSSH:
	// ssh -J user@gateway:PORT login@node).
	SSHAddr string
	// IdleTimeout ends SSH sessions after this long without traffic; zero
	// means 15 minutes.
	IdleTimeout time.Duration
	// AgentTTL is the lifetime of agent certificates; zero means 24 h.
	AgentTTL time.Duration
	// StoreSync is "normal" (the default: commits survive a crash of the
	// gateway, not a power loss) or "full" (an fsync per commit, which
	// adds the disk's sync time to every login and stream decision).
	StoreSync string
	// Names are the host names and IP addresses the gateway's own
	// certificate is valid for, besides localhost, 127.0.0.1 and ::1.
	Names []string
	// TLSCertFile and TLSKeyFile, when both set, replace the certificate
	// issued by the cluster CA; they are reloaded when they change.
	TLSCertFile, TLSKeyFile string
	// Lockout sets failed-login lockout; zero means 5 failures, 15 minutes.
	Lockout auth.LockoutPolicy
	// LoginRate and LoginBurst limit anonymous requests per source address
	// (every request to login, enrolment, ping and the CA bundle, and any
	// other request without a valid certificate of the cluster); zero
	// means 2 per second with a burst of 20.
	LoginRate  float64
	LoginBurst int
	// MaxConnsPerSource caps the concurrent connections of one source
	// address (an IPv4 address, an IPv6 /64): on the TCP listeners (API and
	// jump host together) and, separately, among the QUIC connections not
	// yet authenticated. Connections over it are closed at once. Zero means
	// netguard.DefaultPerSource (256).
	MaxConnsPerSource int
	// MaxConns caps the concurrent TCP connections (API and jump host
	// together) and, separately, the QUIC connections. Zero means 80% of
	// the open-file limit (raised to its hard limit at start), at most
	// 65,536 (netguard.DefaultTotal).
	MaxConns int
	// HandshakeTimeout bounds an API connection's TLS handshake (a silent
	// or stalled client is closed after it) and the reading of each
	// request's headers, and the QUIC handshake. Zero means 10 seconds.
	HandshakeTimeout time.Duration
	// SSHHandshakeTimeout closes a jump host connection not authenticated
	// this long after it was accepted; zero means
	// jumphost.DefaultHandshakeTimeout (15 s).
	SSHHandshakeTimeout time.Duration
	// SSHIdleConnTimeout closes an authenticated jump host connection with
	// no channel open for this long; zero means jumphost.DefaultIdleTimeout
	// (15 min).
	SSHIdleConnTimeout time.Duration
	// AuditFoldInterval: repeats of a refusal of an anonymous caller (same
	// type, source and reason) are written as one audit event with a count
	// per interval, after the first. Zero means one minute.
	AuditFoldInterval time.Duration
	// Store is the URL of the PostgreSQL database the gateways of a cluster
	// share (postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=verify-full&
	// sslrootcert=CA.pem; see pkg/store/pgstore); empty means the SQLite
	// store in DataDir.
	Store string
	// StoreInsecure allows a plaintext or unverified TLS connection to a
	// PostgreSQL host other than loopback. Dangerous: the network between
	// a gateway and its database is not trusted.
	StoreInsecure bool
	// ID names this gateway in the cluster (tunnel admin gateways ls); it
	// must be unique among the gateways sharing the store. Empty means the
	// host name.
	ID string
	// AdvertiseAddr is the host (or host:port) at which others reach this
	// gateway, recorded in its heartbeats; empty means the addresses it is
	// bound to.
	AdvertiseAddr string
	// HeartbeatInterval is how often the gateway records itself in the
	// store (one write); it counts as alive for three intervals after each
	// heartbeat. Zero means 10 s.
	HeartbeatInterval time.Duration
	// ReconcileInterval is how often the gateway checks its live access
	// against the store, as a safety net under the change notifications.
	// Zero means 60 s.
	ReconcileInterval time.Duration
	// Vault, if its Addr is set, holds the cluster's keys (vault.go): the
	// cluster must have been created with it (init --vault-addr).
	Vault VaultConfig
	// DNSAddr, if set, is where the gateway answers DNS (UDP and TCP) for
	// DNSZone: SRV records of the live gateways for discovery, A/AAAA of
	// each, and DNSNodes (NAME=IP[,IP]) an operator publishes (dns.go).
	DNSAddr  string
	DNSZone  string
	DNSNodes []string
	// DebugAddr, if set, is a loopback address serving Go's runtime
	// profiles (net/http/pprof) without authentication (debug.go).
	DebugAddr string
	// Backup, if its Dir is set, backs the store up on a schedule
	// (backup.go, started by StartBackups).
	Backup BackupSchedule
	// MetricsAddr, if set, is where the gateway serves its Prometheus
	// metrics, /healthz and /readyz (metrics.go): ListenMetrics, which
	// tunnel-gateway run calls after New, binds it.
	MetricsAddr string
	// AuditLog, if set, is a file the gateway appends every audit event
	// of the cluster to, one JSON line each, for log shippers
	// (auditfile.go).
	AuditLog string
	// Version is reported by /v1/ping.
	Version string
	Log     *slog.Logger
	Clock   func() time.Time
}

func (c *Config) setDefaults() {
	if c.KEKFile == "" {
		c.KEKFile = filepath.Join(c.DataDir, KEKFile)
	}
	if c.APIAddr == "" {
		c.APIAddr = ":8443"
	}
	if c.LoginRate == 0 {
		c.LoginRate = 2
	}
	if c.LoginBurst == 0 {
		c.LoginBurst = 20
	}
	if c.MaxConnsPerSource == 0 {
		c.MaxConnsPerSource = netguard.DefaultPerSource
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if c.AuditFoldInterval == 0 {
		c.AuditFoldInterval = auditlog.DefaultFoldInterval
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.ID == "" {
		c.ID = hostname()
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.ReconcileInterval == 0 {
		c.ReconcileInterval = DefaultReconcileInterval
	}
}

func (c *Config) validate() error {
	if c.DataDir == "" {
		return errors.New("--data-dir is required")
	}
	if c.StoreSync != "" && c.StoreSync != "normal" && c.StoreSync != "full" {
		return fmt.Errorf("--store-sync %q: use normal or full", c.StoreSync)
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return errors.New("give both --tls-cert and --tls-key, or neither")
	}
	if c.LoginRate < 0 || c.LoginBurst < 0 {
		return errors.New("login rate and burst must not be negative")
	}
	if c.MaxConnsPerSource < 0 || c.MaxConns < 0 {
		return errors.New("--max-conns-per-source and --max-conns must not be negative (0 means the default)")
	}
	if err := checkStoreURL(c.Store); err != nil {
		return err
	}
	if err := checkDebugAddr(c.DebugAddr); err != nil {
		return err
	}
	if err := c.checkDNS(); err != nil {
		return err
	}
	if c.Store != "" && c.StoreSync != "" && c.StoreSync != "normal" {
		return errors.New("--store-sync applies to the SQLite store only: PostgreSQL's durability is its own (synchronous_commit)")
	}
	if c.HeartbeatInterval < 0 || c.ReconcileInterval < 0 {
		return errors.New("--heartbeat-interval and --reconcile-interval must not be negative (0 means the default)")
	}
	if c.HandshakeTimeout < 0 || c.AuditFoldInterval < 0 || c.SSHHandshakeTimeout < 0 || c.SSHIdleConnTimeout < 0 {
		return errors.New("timeouts and intervals must not be negative (0 means the default)")
	}
	return nil
}
