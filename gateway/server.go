package gateway

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"

	"golang.org/x/time/rate"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/access"
	"github.com/tunnelhq/tunnel/gateway/internal/apiserver"
	"github.com/tunnelhq/tunnel/gateway/internal/auditlog"
	"github.com/tunnelhq/tunnel/gateway/internal/auth"
	"github.com/tunnelhq/tunnel/gateway/internal/dbcreds"
	"github.com/tunnelhq/tunnel/gateway/internal/jumphost"
	"github.com/tunnelhq/tunnel/gateway/internal/login"
	"github.com/tunnelhq/tunnel/gateway/internal/relay"
	"github.com/tunnelhq/tunnel/gateway/internal/servercert"
	"github.com/tunnelhq/tunnel/gateway/internal/sessions"
	"github.com/tunnelhq/tunnel/pkg/netguard"
	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/trust"
	"github.com/tunnelhq/tunnel/pkg/vaultkeys"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// Gateway is a running gateway.
//
// Lifecycle: New opens the store and the CA and binds the listener; Serve
// runs until Close (or a serve error); Close stops accepting, waits up to
// its context's deadline for requests in flight, then closes the store.
// Close is safe to call more than once and from any goroutine.
type Gateway struct {
	cfg   Config
	store store.Store
	ca    *certs.Authority
	certs servercert.Source
	ln    net.Listener
	http  *http.Server
	audit *auditlog.Writer
	relay *relay.Server
	sess  *sessions.Manager
	jump  *jumphost.Server
	sshLn net.Listener
	udp   *net.UDPConn
	qtr   *quic.Transport
	qln   *quic.Listener
	// QUIC over TCP (the fallback where UDP is blocked): TLS connections
	// to the API port with ALPN wire.ALPNTCP carry QUIC packets.
	tcpPk  *transport.StreamPackets
	qtrTCP *quic.Transport
	qlnTCP *quic.Listener

	// Budgets of the listeners (pkg/netguard), and the folding of
	// anonymous callers' refusals in the audit log.
	tcpLim  *netguard.Limiter
	qgate   *netguard.QUICGate
	errLog  *netguard.ErrorLog
	denials *auditlog.Folder
	// acl enforces the cluster's network rules on every listener (netacl.go).
	acl *netguard.ACL
	// auditFile appends the audit log to --audit-log (auditfile.go).
	auditFile *auditFile

	ctx    context.Context // ends the relay
	cancel context.CancelFunc

	// Cluster membership and the changes of other gateways (heartbeat.go,
	// fanout.go): bg ends them, bgWG waits for them.
	started  time.Time
	changes  <-chan store.Change
	fan      *fanout
	bgCancel context.CancelFunc
	bgWG     sync.WaitGroup

	// Vault, the key backend (vault.go), nil without --vault-addr.
	vault *vaultkeys.Client
	// dbcreds leases database credentials from Vault (vault.go), nil
	// without --vault-addr.
	dbcreds *dbcreds.Manager

	// The DNS server (dns.go), nil when off.
	dns *dnsState

	// The debug listener (debug.go), nil when off.
	debugLn net.Listener
	debug   *http.Server
	debugWG sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// New prepares a gateway from an initialised data directory and binds its
// listener, so that Addr is known before Serve.
func New(ctx context.Context, cfg Config) (*Gateway, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	cfg.applyFileLimit()
	so := storeOptions{dataDir: cfg.DataDir, url: cfg.Store, insecure: cfg.StoreInsecure, sync: cfg.StoreSync, origin: cfg.ID}
	if cfg.Store == "" {
		dbPath := filepath.Join(cfg.DataDir, DBFile)
		if _, err := os.Stat(dbPath); err != nil {
			return nil, fmt.Errorf("no cluster in %s: run tunnel-gateway init --data-dir %s first", cfg.DataDir, cfg.DataDir)
		}
	} else if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data directory: %w", err)
	}
	var (
		sealer seal.Sealer
		vc     *vaultkeys.Client
		err    error
	)
	if cfg.Vault.Addr != "" {
		if vc, err = openVault(ctx, cfg.Vault, cfg.Log); err != nil {
			return nil, err
		}
	} else if sealer, err = seal.NewKeyFileSealer(cfg.KEKFile); err != nil {
		if _, serr := os.Stat(cfg.KEKFile); errors.Is(serr, fs.ErrNotExist) && keysInVault(ctx, so) {
			return nil, errors.New("this cluster keeps its keys in Vault: give --vault-addr (and a token: --vault-token-file or VAULT_TOKEN, or AppRole)")
		}
		if cfg.Store != "" {
			return nil, fmt.Errorf("%w: every gateway of a cluster needs the first gateway's KEK file, copied here (or --kek-file), or the cluster's Vault (--vault-addr)", err)
		}
		return nil, err
	}
	st, err := openStore(ctx, so)
	if err != nil {
		if vc != nil {
			vc.Close()
		}
		return nil, err
	}
	if vc != nil {
		if sealer, err = vaultSealer(ctx, st, vc); err != nil {
			vc.Close()
			st.Close()
			return nil, err
		}
	}
	g := &Gateway{cfg: cfg, store: st, started: cfg.Clock(), vault: vc}
	// Watch before anything is read, so that no change falls between what
	// setup reads and what the fan-out hears.
	bgCtx, bgCancel := context.WithCancel(context.Background())
	g.bgCancel = bgCancel
	if g.changes, err = st.Watch(bgCtx); err != nil {
		bgCancel()
		st.Close()
		return nil, fmt.Errorf("watch the store's changes: %w", storeError(err))
	}
	if err := g.setup(ctx, sealer); err != nil {
		bgCancel()
		st.Close()
		return nil, err
	}
	if err := g.join(ctx); err != nil {
		bgCancel()
		g.closeAll(context.Background())
		return nil, err
	}
	if err := g.listenDNS(); err != nil {
		bgCancel()
		g.closeAll(context.Background())
		return nil, err
	}
	g.startBackground(bgCtx)
	return g, nil
}

// startBackground starts the heartbeat and the fan-out of other gateways'
// changes; Close stops them.
func (g *Gateway) startBackground(ctx context.Context) {
	var killers []sessions.Killer
	killers = append(killers, g.relay)
	if g.dbcreds != nil {
		killers = append(killers, g.dbcreds)
	}
	if g.jump != nil {
		killers = append(killers, g.jump)
	}
	g.fan = &fanout{self: g.cfg.ID, store: g.store, killers: killers, reevaluate: g.relay.Reevaluate,
		interval: g.cfg.ReconcileInterval, clock: g.cfg.Clock, log: g.cfg.Log.With("component", "fanout")}
	g.fan.network = g.applyNetwork
	g.fan.ca = g.reloadCA
	if g.auditFile != nil {
		g.bgWG.Add(1)
		go func() {
			defer g.bgWG.Done()
			g.auditFile.run(ctx)
		}()
	}
	g.bgWG.Add(2)
	go func() {
		defer g.bgWG.Done()
		g.heartbeat(ctx)
	}()
	go func() {
		defer g.bgWG.Done()
		g.fan.run(ctx, g.changes)
	}()
}

func (g *Gateway) setup(ctx context.Context, sealer seal.Sealer) error {
	cfg := g.cfg
	cluster, err := g.store.GetMeta(ctx, "cluster")
	if errors.Is(err, store.ErrNotFound) && cfg.Store != "" {
		return fmt.Errorf("the store at %s holds no cluster yet: run tunnel-gateway init --store ... on the first gateway", describeStore(storeOptions{url: cfg.Store}))
	}
	if err != nil {
		return fmt.Errorf("read cluster name: %w", storeError(err))
	}
	keys, epoch, err := store.ReadCAKeys(ctx, g.store)
	if err != nil {
		return fmt.Errorf("read CA keys: %w", storeError(err))
	}
	caCfg := certs.Config{Cluster: cluster, Clock: cfg.Clock, Epoch: epoch}
	if g.vault != nil {
		g.ca, err = certs.LoadWith(caCfg, keys, vaultOpener(ctx, g.vault))
	} else {
		g.ca, err = certs.Load(caCfg, keys, sealer)
	}
	if err != nil {
		return kekError(cfg.KEKFile, err)
	}
	if cfg.TLSCertFile != "" {
		g.certs, err = servercert.FromFiles(cfg.TLSCertFile, cfg.TLSKeyFile, cfg.Log)
	} else {
		names := append([]string{"localhost", "127.0.0.1", "::1"}, cfg.Names...)
		if h, herr := os.Hostname(); herr == nil && h != "" {
			names = append(names, h)
		}
		g.certs, err = servercert.FromCA(g.ca, "gateway", names, 0, cfg.Clock)
		if g.ca.X509KeyType() == "Ed25519" && cfg.Log != nil {
			cfg.Log.Warn("the cluster's X.509 CA is Ed25519, which browsers refuse: the web console will not open in a browser; rotate the X.509 CA (tunnel admin ca rotate start --kind x509) or serve the API with --tls-cert and --tls-key")
		}
	}
	if err != nil {
		return err
	}
	hasher, err := auth.NewHasher(auth.DefaultParams, 0)
	if err != nil {
		return err
	}
	loginSvc := &login.Service{Store: g.store, CA: g.ca, Sealer: sealer, Hasher: hasher,
		Lockout: cfg.Lockout, Clock: cfg.Clock, Log: cfg.Log}
	// On error, what was opened is closed again, newest first.
	var undo []func()
	ok := false
	defer func() {
		if !ok {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	g.tcpLim = netguard.NewLimiter("TCP", netguard.Limits{PerSource: cfg.MaxConnsPerSource, Total: cfg.MaxConns}, cfg.Log)
	g.qgate = netguard.NewQUICGate(netguard.Limits{PerSource: cfg.MaxConnsPerSource, Total: cfg.MaxConns}, cfg.Log)
	g.errLog = netguard.NewErrorLog(cfg.Log)
	undo = append(undo, g.tcpLim.Close, g.qgate.Close, g.errLog.Close)
	g.acl = netguard.NewACL(cfg.Log)
	undo = append(undo, g.acl.Close)
	if err := g.applyNetwork(ctx); err != nil {
		return err
	}
	if cfg.AuditLog != "" {
		if g.auditFile, err = openAuditFile(cfg.AuditLog, g.store, cfg.Log.With("component", "auditfile")); err != nil {
			return err
		}
		undo = append(undo, func() { g.auditFile.f.Close() })
	}
	if err := g.listenAPI(); err != nil {
		return err
	}
	undo = append(undo, func() { g.ln.Close() })
	undo = append(undo, func() { g.qtr.Close(); g.qtrTCP.Close(); g.tcpPk.Close() })
	if err := g.listenDebug(); err != nil {
		return err
	}
	undo = append(undo, g.closeDebug)
	g.audit = auditlog.New(g.store)
	g.denials = auditlog.NewFolder(g.audit, cfg.AuditFoldInterval, cfg.Clock, cfg.Log)
	g.denials.Start()
	loginSvc.Denials = g.denials
	undo = append(undo, g.audit.Close, func() { g.denials.Close() })
	// One access decider (one home for "who may reach what") shared by
	// login, sessions, the relay and the admin API; the relay gives it the
	// live streams and sessions to re-evaluate.
	dec := &access.Decider{Store: g.store, MaxTTL: g.ca.MaxTTL, Audit: g.audit, Denials: g.denials, Clock: cfg.Clock, Log: cfg.Log}
	loginSvc.Access = dec
	g.relay = &relay.Server{Store: g.store, CA: g.ca, Audit: g.audit, Denials: g.denials, Access: dec, Clock: cfg.Clock, Log: cfg.Log, IdleTimeout: cfg.IdleTimeout}
	g.sess = &sessions.Manager{Store: g.store, CA: g.ca, Killer: g.relay, Access: dec, Clock: cfg.Clock, Log: cfg.Log}
	g.relay.Sessions = g.sess
	g.setupDBCreds()
	if cfg.SSHAddr != "" {
		sshLn, err := net.Listen("tcp", cfg.SSHAddr)
		if err != nil {
			return listenError("--ssh-addr", "TCP", cfg.SSHAddr, err)
		}
		sshLn = g.acl.Listener(sshLn, netguard.ScopeSSH, "jump host")
		g.sshLn = netguard.NewListener(sshLn, g.tcpLim, "jump host")
		undo = append(undo, func() { g.sshLn.Close() })
		names := append([]string{"localhost", "127.0.0.1", "::1"}, cfg.Names...)
		if h, herr := os.Hostname(); herr == nil && h != "" {
			names = append(names, h)
		}
		g.jump = &jumphost.Server{Store: g.store, CA: g.ca, Sessions: g.sess, Relay: g.relay, Names: names,
			Clock: cfg.Clock, Log: cfg.Log, HandshakeTimeout: cfg.SSHHandshakeTimeout, IdleTimeout: cfg.SSHIdleConnTimeout}
	}
	if err := g.sess.Start(ctx); err != nil {
		return err
	}
	ok = true
	g.ctx, g.cancel = context.WithCancel(context.Background())
	api := &apiserver.Server{
		Store: g.store, CA: g.ca, Sealer: sealer, Hasher: hasher, Login: loginSvc,
		Limiter: auth.NewIPLimiter(rate.Limit(cfg.LoginRate), cfg.LoginBurst, cfg.Clock), Denials: g.denials,
		Version: cfg.Version, Clock: cfg.Clock, Log: cfg.Log, TOTPIssuer: "tunnel " + cluster,
		Presence: g.relay, PolicyChanged: g.relay.ReloadPolicy, AgentTTL: cfg.AgentTTL, Sessions: g.sess,
	}
	api.NetworkChanged = g.applyNetwork
	if g.vault != nil {
		now := cfg.Clock
		if now == nil {
			now = time.Now
		}
		api.NewCAKey = vaultCAKeyMaker(g.vault, cluster, now)
	}
	// net/http bounds a TLS handshake by the least of ReadHeaderTimeout,
	// ReadTimeout and WriteTimeout: a connection silent from its first
	// byte, or stalled in mid-handshake, is closed after HandshakeTimeout.
	tlsConf := trust.ServerConfig(g.certs.GetCertificate)
	tlsConf.NextProtos = []string{"http/1.1", wire.ALPNTCP}
	g.http = &http.Server{
		Handler:   api.Handler(),
		TLSConfig: tlsConf,
		// QUIC over TCP (where UDP is blocked) on the same port.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){
			wire.ALPNTCP: func(_ *http.Server, c *tls.Conn, _ http.Handler) { g.tcpPk.Serve(c) },
		},
		ReadHeaderTimeout: cfg.HandshakeTimeout,
		ReadTimeout:       max(30*time.Second, cfg.HandshakeTimeout),
		WriteTimeout:      max(60*time.Second, cfg.HandshakeTimeout),
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          g.errLog.Logger(),
	}
	// Shutdown waits for active connections, and a QUIC-over-TCP one stays
	// active until it is closed: close them when shutdown starts (their
	// agents and clients see the end at once, as with a UDP gateway's).
	g.http.RegisterOnShutdown(g.tcpPk.CloseConns)
	g.http.RegisterOnShutdown(api.StopWaits)
	return nil
}

// applyFileLimit raises the soft open-file limit to the hard one, derives
// the default total connection budget from it, and logs the limits in
// force.
func (c *Config) applyFileLimit() {
	limit, err := netguard.RaiseFileLimit()
	if err != nil {
		c.Log.Warn("could not raise the open-file limit; the connection budget follows the current one", "err", err)
	}
	if c.MaxConns == 0 {
		c.MaxConns = netguard.DefaultTotal(limit)
	} else if limit > 0 && uint64(c.MaxConns) >= limit {
		c.Log.Warn("--max-conns is not below the open-file limit: connections past the limit fail with \"too many open files\" instead of being refused; lower it, or raise the limit (ulimit -n, LimitNOFILE=)",
			"max_conns", c.MaxConns, "open_file_limit", limit)
	}
	c.Log.Info("connection limits", "open_file_limit", limit, "max_conns", c.MaxConns,
		"max_conns_per_source", c.MaxConnsPerSource, "handshake_timeout", c.HandshakeTimeout.String(),
		"audit_fold_interval", c.AuditFoldInterval.String())
}

// listenQUIC binds the UDP side: by default the port the API got, so one
// host:port serves both.
// listenAPI binds the API's TCP listener and the QUIC socket. With an
// ephemeral port (--api-addr H:0, tests) and no --quic-addr, the UDP side
// takes the port number TCP got, which another program may already hold
// on UDP: then both are bound again on a new port, a few times.
func (g *Gateway) listenAPI() error {
	_, port, _ := net.SplitHostPort(g.cfg.APIAddr)
	tries := 1
	if port == "0" && g.cfg.QUICAddr == "" {
		tries = 20
	}
	for i := 1; ; i++ {
		ln, err := net.Listen("tcp", g.cfg.APIAddr)
		if err != nil {
			return listenError("--api-addr", "TCP", g.cfg.APIAddr, err)
		}
		ln = g.acl.Listener(ln, netguard.ScopeAPI, "API")
		g.ln = netguard.NewListener(ln, g.tcpLim, "API")
		err = g.listenQUIC()
		if err == nil {
			return nil
		}
		g.ln.Close()
		if i >= tries || !errors.Is(err, syscall.EADDRINUSE) {
			return err
		}
	}
}

func (g *Gateway) listenQUIC() error {
	addr, flag := g.cfg.QUICAddr, "--quic-addr"
	if addr == "" {
		flag = "--api-addr"
		host, _, _ := net.SplitHostPort(g.cfg.APIAddr)
		addr = net.JoinHostPort(host, strconv.Itoa(g.ln.Addr().(*net.TCPAddr).Port))
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return listenError(flag, "UDP", addr, err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return listenError(flag, "UDP", addr, err)
	}
	key, err := resetKey(filepath.Join(g.cfg.DataDir, ResetKeyFile))
	if err != nil {
		udp.Close()
		return err
	}
	secret, err := ticketSecret(filepath.Join(g.cfg.DataDir, TicketSecretFile))
	if err != nil {
		udp.Close()
		return err
	}
	tickets, err := transport.NewTickets(secret, g.cfg.Clock)
	if err != nil {
		udp.Close()
		return err
	}
	serverTLS := transport.ServerTLS(g.certs.GetCertificate)
	tickets.Install(serverTLS)
	g.udp = udp
	// The gate caps connections per source until they authenticate, and
	// in total; the handshake has the API's deadline. The admission caps
	// the connections being set up at once over both transports: past
	// it, a new one is refused at its first packet ("busy") and its peer
	// retries with backoff, rather than every handshake slowing down
	// until they time out (pkg/transport/admission.go).
	admit := transport.NewAdmission(transport.DefaultMaxHandshakes, g.cfg.MaxConnsPerSource).ConnContext(g.qgate.ConnContext)
	g.qtr = &quic.Transport{Conn: udp, StatelessResetKey: key,
		ConnContext: admit, VerifySourceAddress: g.qgate.VerifySourceAddress}
	g.qtr.ConnContext = g.acl.ConnContext(netguard.ScopeQUIC, "QUIC", g.qtr.ConnContext)
	qc := transport.QUICConfig()
	qc.HandshakeIdleTimeout = g.cfg.HandshakeTimeout
	g.qln, err = g.qtr.Listen(serverTLS, qc)
	if err != nil {
		g.qtr.Close()
		return fmt.Errorf("listen QUIC on %s: %w", addr, err)
	}
	// The fallback: the same QUIC, carried on TLS connections to the API
	// port; each TCP connection is one peer, already bounded by the TCP
	// listener's caps.
	g.tcpPk = transport.NewStreamPackets(g.ln.Addr(), g.cfg.Log)
	g.qtrTCP = &quic.Transport{Conn: g.tcpPk, StatelessResetKey: key, ConnContext: relay.OverTCP(admit)}
	g.qtrTCP.ConnContext = g.acl.ConnContext(netguard.ScopeQUIC, "QUIC over TCP", g.qtrTCP.ConnContext)
	g.qlnTCP, err = g.qtrTCP.Listen(serverTLS, qc)
	if err != nil {
		g.qtr.Close()
		g.qtrTCP.Close()
		g.tcpPk.Close()
		return fmt.Errorf("listen QUIC over TCP on %s: %w", g.ln.Addr(), err)
	}
	transport.CheckUDPBuffers(g.cfg.Log)
	return nil
}

// resetKey reads the stateless reset key, creating it on first use.
func resetKey(path string) (*quic.StatelessResetKey, error) {
	var k quic.StatelessResetKey
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if _, err := rand.Read(k[:]); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, k[:], 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", path, err)
		}
		return &k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) != len(k) {
		return nil, fmt.Errorf("%s is damaged (%d bytes, want %d): remove it", path, len(b), len(k))
	}
	copy(k[:], b)
	return &k, nil
}

// QUICAddr is the UDP address agents and clients connect to.
func (g *Gateway) QUICAddr() net.Addr { return g.udp.LocalAddr() }

// Addr is the address the API listens on.
func (g *Gateway) Addr() net.Addr { return g.ln.Addr() }

// ID is this gateway's id in the cluster.
func (g *Gateway) ID() string { return g.cfg.ID }

// Cluster is the cluster's name.
func (g *Gateway) Cluster() string { return g.ca.Cluster() }

// Pin is the pin clients need: the cluster CA's, or, with an operator's
// certificate, that of the certificate's issuer as served.
func (g *Gateway) Pin() string {
	if f, ok := g.certs.(*servercert.Files); ok {
		c, err := f.GetCertificate(nil)
		if err == nil && len(c.Certificate) > 1 {
			if issuer, err := x509.ParseCertificate(c.Certificate[len(c.Certificate)-1]); err == nil {
				return trust.Pin(issuer)
			}
		}
	}
	return g.ca.Pin()
}

// Serve answers API requests until Close. It returns nil after Close.
func (g *Gateway) Serve() error {
	errc := make(chan error, 2)
	go func() { errc <- g.relay.Serve(g.ctx, g.qln, g.qlnTCP) }()
	if g.jump != nil {
		go func() { errc <- g.jump.Serve(g.sshLn) }()
	}
	tlsLn := tls.NewListener(g.ln, g.http.TLSConfig)
	err := g.http.Serve(tlsLn)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	g.cancel()
	if g.jump != nil {
		_ = g.jump.Close()
		err = errors.Join(err, <-errc)
	}
	return errors.Join(err, <-errc)
}

// SSHAddr is the jump host's address, nil when it is off.
func (g *Gateway) SSHAddr() net.Addr {
	if g.sshLn == nil {
		return nil
	}
	return g.sshLn.Addr()
}

// Close shuts the gateway down gracefully, waiting for requests in flight
// until ctx ends. Safe to call more than once.
func (g *Gateway) Close(ctx context.Context) error {
	g.closeOnce.Do(func() {
		// The fan-out and heartbeat stop first; then this gateway leaves
		// the cluster's list.
		g.bgCancel()
		g.bgWG.Wait()
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		if err := g.store.DeleteGateway(dctx, g.cfg.ID); err != nil {
			g.cfg.Log.Warn("remove this gateway from the store's list; it shows as not alive once its heartbeat is old", "err", storeError(err))
		}
		cancel()
		g.closeAll(ctx)
	})
	return g.closeErr
}

// closeAll closes what New opened, gracefully until ctx ends.
func (g *Gateway) closeAll(ctx context.Context) {
	{
		err := g.http.Shutdown(ctx)
		if err != nil {
			g.http.Close()
		}
		// Shutdown closes only listeners Serve was given.
		if cerr := g.ln.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = errors.Join(err, cerr)
		}
		// The relay closes every QUIC connection when its context ends;
		// Serve waits for it.
		g.sess.Close()
		if g.jump != nil {
			_ = g.jump.Close()
			if cerr := g.sshLn.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
				err = errors.Join(err, cerr)
			}
		}
		g.cancel()
		g.qln.Close()
		g.qlnTCP.Close()
		g.relay.Wait()
		g.closeDBCreds()
		g.qtr.Close()
		g.qtrTCP.Close()
		g.tcpPk.Close()
		// The folded refusals are written before the writer stops.
		_ = g.denials.Close()
		g.audit.Close()
		g.tcpLim.Close()
		g.qgate.Close()
		g.errLog.Close()
		g.acl.Close()
		g.closeDNS(ctx)
		g.closeDebug()
		g.closeErr = errors.Join(err, g.store.Close())
		if g.vault != nil {
			g.vault.Close()
		}
	}
}
