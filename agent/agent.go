// Package agent is the tunnel agent that runs on every VM. It enrols once
// with a join token, keeps its identity sealed in its data directory,
// renews its certificate at about two thirds of its life, keeps a QUIC
// connection to the gateway (dialled out: the VM needs no inbound port),
// serves the streams the gateway delivers to its exposed services, and
// turns connections to its local listeners into streams to services on
// other nodes.
//
// Use [Run] with a [Config]; cmd/tunnel-agent is a thin front end.
//
// Goroutines, all owned by Run and waited for before it returns:
//
//	Run ─┬─ connection manager ── one loop per gateway (keep)
//	     │                           └─ one session per QUIC connection
//	     │                               ├─ control stream reader
//	     │                               ├─ heartbeat (over UDP)
//	     │                               └─ one goroutine per delivered stream
//	     ├─ renewal timer
//	     ├─ one forwarder per listener ── one goroutine per local connection
//	     └─ recording uploads (one per recording until the gateway has it)
//
// Every goroutine that serves one connection or one stream recovers a
// panic at its boundary (pkg/panics): that connection ends, the agent
// lives.
//
// One agent runs per data directory: Run holds a lock on it (see
// [LockFile]) and refuses to start if another agent holds it.
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/agent/internal/dbauth"
	"github.com/tunnelhq/tunnel/agent/internal/dnsstub"
	"github.com/tunnelhq/tunnel/agent/internal/sshd"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/apiclient"
	"github.com/tunnelhq/tunnel/pkg/discovery"
	"github.com/tunnelhq/tunnel/pkg/netguard"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/trust"
	"github.com/tunnelhq/tunnel/pkg/version"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// Config says how to run an agent. Zero values of optional fields mean
// their defaults.
type Config struct {
	// DataDir holds the sealed identity and its key-encryption key.
	DataDir string
	// Gateway is HOST:PORT (API over TCP and QUIC over UDP share it), or
	// several separated by commas: gateways that share one store. The
	// agent keeps a connection to every one of them.
	Gateway string
	// Pin is the cluster CA pin; needed to enrol.
	Pin string
	// Token is the join token; needed only the first time.
	Token string
	// File is the expose/listen configuration.
	File *FileConfig
	Log  *slog.Logger
	// Ready, if set, is called once every listener is bound (before the
	// agent has connected to the gateway).
	Ready func()
	// Connected, if set, is called with a gateway's address each time
	// the agent becomes connected to it: after the QUIC handshake and the
	// gateway's welcome, never before. With several gateways it is called
	// for each, from their own goroutines.
	Connected func(gateway string)
	// DNSServer is the DNS server (HOST:PORT) that resolves --gateway
	// srv:ZONE; empty means the system's resolvers.
	DNSServer string
	// OverTCP carries QUIC over TCP to every gateway from the start, even
	// where UDP works (networks that drop or mangle UDP now and then);
	// otherwise it is used only while UDP gets no answer.
	OverTCP bool
	// Metrics, if set, counts what the agent does and reads its gateway
	// connections (metrics.go); tunnel-agent run --metrics-addr serves it.
	Metrics *Metrics
}

// Agent is a running agent.
type Agent struct {
	cfg   Config
	log   *slog.Logger
	store *identityStore

	mu       sync.Mutex // guards id
	id       *Identity
	cert     atomic.Pointer[tls.Certificate]
	services map[string]Expose
	// chains remembers the chains verified: the peers' (peerTLS), since a
	// direct connection presents the same chain at every handshake, and
	// the gateways' (dialOn), presented again at every reconnection.
	chains *trust.ChainCache
	// idMu serialises the changes of the identity (read, save, set): a
	// renewal, a trust bundle a gateway sends (applyTrust).
	idMu sync.Mutex

	peerCAs  atomic.Pointer[peerCAs] // the cluster CAs of the identity (peerRoots)
	sudoOnce sync.Once
	sudoers  *sudoers // the sessions' sudoers drop-ins (sudo)

	// links are the connections to every gateway (gatewayLinks), made
	// from the identity's list, or from DNS (--gateway srv:ZONE) and then
	// following its changes; opener opens the local listeners' streams
	// through the first of them, in the list's order, that is connected.
	linksMu   sync.Mutex // guards links, linksInit
	links     []*link
	linksInit bool
	opener    atomic.Pointer[transport.Failover]
	// srvZone is the DNS zone of --gateway srv:ZONE ("" for a list), and
	// resolved its gateways as last resolved (discovery.go).
	srvZone  string
	resolved []string
	watch    *discovery.Watcher

	// The direct path (peers.go): the UDP socket's transport shared by
	// the gateway links and the peer links, this agent's outgoing peer
	// links, the direct streams gateways announced to it, and whether a
	// gateway brokers direct streams. ctx is Run's, for the peer dials.
	ctx      context.Context
	tr       atomic.Pointer[quic.Transport]
	peers    *peerPool
	expect   *expected
	gwDirect atomic.Bool
	gwAhead  atomic.Bool // a gateway decides direct streams ahead (ahead.go)

	sshd *sshd.Server // the node's SSH endpoint
	recs *recordings  // session recordings on their way to the gateway

	// probeTCP checks the gateway's TCP port after a QUIC timeout (to tell
	// a blocked UDP port from a gateway that is down); nil skips it.
	probeTCP func(addr string) error
	// retry and retryRefused are the backoffs between connection attempts
	// after a failure and after a refusal by the gateway; zero values mean
	// the defaults (tests shorten them).
	retry, retryRefused transport.Backoff
	// beat is the period of the heartbeat on each control stream
	// (wire.MsgBeat); zero means transport.Beat (tests shorten it).
	beat time.Duration
}

// Run enrols if needed and runs the agent until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.File == nil {
		cfg.File = &FileConfig{}
	}
	if err := cfg.File.Validate(); err != nil {
		return err
	}
	if cfg.DataDir == "" {
		return errors.New("no data directory: give --data-dir")
	}
	if cfg.Gateway != "" {
		if _, isSRV, err := discovery.ParseGateway(cfg.Gateway); err != nil {
			return fmt.Errorf("--gateway: %w", err)
		} else if !isSRV {
			gws, err := apiclient.SplitGateways(cfg.Gateway)
			if err != nil {
				return fmt.Errorf("--gateway: %w", err)
			}
			cfg.Gateway = strings.Join(gws, ",")
		}
	}
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer lock.release()
	// Bind every listener first, before an enrolment spends the join
	// token: a port in use is an error at start, and nothing is lost.
	lns, err := bindListeners(cfg.File.Listen)
	if err != nil {
		return err
	}
	defer func() {
		for _, ln := range lns {
			_ = ln.Close() // already closed by its forwarder once it ran
		}
	}()
	st, err := openIdentityStore(cfg.DataDir)
	if err != nil {
		return err
	}
	a := &Agent{cfg: cfg, log: cfg.Log, store: st, services: map[string]Expose{}, probeTCP: probeTCP, expect: newExpected(),
		chains: trust.NewChainCache(maxPeerChains)}
	cfg.Metrics.attach(a)
	a.peers = newPeerPool(a)
	// --gateway srv:ZONE: the gateways come from DNS (discovery.go).
	if err := a.resolveGateways(ctx, cfg.Gateway); err != nil {
		return err
	}
	if a.watch != nil {
		defer a.watch.Close()
	}
	for _, e := range cfg.File.Expose {
		a.services[e.Name] = e
		if e.Protocol == "mysql" && e.Credentials != nil {
			// The MySQL protocol library logs for the whole process.
			dbauth.SetMySQLLog(a.log.With("component", "mysql-login"))
		}
	}
	id, err := st.load()
	if err != nil {
		return err
	}
	switch {
	case id == nil && cfg.Token == "":
		return errors.New("this agent is not enrolled yet: give --token (an admin creates one with tunnel admin tokens create --agent NAME)")
	case id == nil:
		if id, err = a.enroll(ctx); err != nil {
			return err
		}
		a.log.Info("enrolled", "agent", id.Name, "cluster", id.Cluster)
	default:
		if cfg.Token != "" {
			a.log.Info("already enrolled; ignoring --token", "agent", id.Name)
		}
		if cfg.Pin != "" && !strings.EqualFold(cfg.Pin, id.Pin) && id.knowsPin(cfg.Pin) {
			// The pin this agent enrolled with (a unit file keeps giving
			// it); a CA rotation moved it since.
			a.log.Info("--ca-pin is the pin this agent enrolled with; the cluster's CA was rotated since, and the agent uses the current one", "pin", id.Pin)
		} else if cfg.Pin != "" && !strings.EqualFold(cfg.Pin, id.Pin) {
			return fmt.Errorf("--ca-pin %s is not the pin this agent enrolled with (%s): drop --ca-pin (the enrolled identity keeps it), or, if the cluster's CA really changed, enrol again with a new join token (remove %s first)",
				cfg.Pin, id.Pin, st.dir+"/"+IdentityFile)
		}
		if cfg.Gateway != "" && cfg.Gateway != id.Gateway {
			id.Gateway = cfg.Gateway
		}
	}
	if err := a.setIdentity(id); err != nil {
		return err
	}
	cert := a.cert.Load()
	if time.Now().After(cert.Leaf.NotAfter) {
		return fmt.Errorf("this agent's certificate expired at %s while it was offline: enrol again with a new join token (remove %s first)",
			cert.Leaf.NotAfter.Format(time.RFC3339), st.dir+"/"+IdentityFile)
	}
	transport.CheckUDPBuffers(a.log)
	// Every local listener's connection and delivered stream holds
	// descriptors: take what the hard limit allows.
	if _, err := netguard.RaiseFileLimit(); err != nil {
		a.log.Warn("cannot raise the open-file limit; many concurrent connections may fail", "err", err)
	}
	if a.recs, err = newRecordings(st.dir, st.sealer, a.log, a.uploadRecording); err != nil {
		return err
	}
	// Last: the uploads of the recordings the SSH endpoint closes.
	defer a.recs.close(uploadShutdownGrace)
	if a.sshd, err = a.newSSHServer(); err != nil {
		return fmt.Errorf("SSH endpoint: %w", err)
	}
	defer a.sshd.Close()
	a.recs.resume()
	return a.run(ctx, lns)
}

// bindListeners binds the listeners of the agent's file, in order; on an
// error it closes those it bound and says which failed, and why.
func bindListeners(ls []Listen) ([]net.Listener, error) {
	var lns []net.Listener
	for _, l := range ls {
		ln, err := net.Listen("tcp", l.Address)
		if err != nil {
			for _, x := range lns {
				x.Close()
			}
			return nil, bindError(l, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

func (a *Agent) setIdentity(id *Identity) error {
	c, err := id.TLSCertificate()
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.id = id
	a.mu.Unlock()
	a.cert.Store(c)
	return nil
}

func (a *Agent) identity() *Identity {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.id
}

// run serves the file's listeners (lns, bound by Run, in the file's order)
// and keeps the connections to the gateways until ctx ends.
func (a *Agent) run(ctx context.Context, lns []net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a.ctx = ctx
	// The listeners' names in DNS (dns: in the file).
	if d := a.cfg.File.DNS; d != nil {
		names := map[string]netip.Addr{}
		for _, l := range a.cfg.File.Listen {
			if ap, err := netip.ParseAddrPort(l.Address); err == nil {
				names[l.Name] = ap.Addr()
			}
		}
		stub, err := dnsstub.Start(dnsstub.Config{Listen: d.Listen, Cluster: a.identity().Cluster, Names: names,
			Upstream: d.Upstream, Log: a.log.With("component", "dns")})
		if err != nil {
			return fmt.Errorf("dns: %w", err)
		}
		defer stub.Close()
		udp, _ := stub.Addr()
		a.log.Info("answering DNS for the listeners", "address", udp.String(), "zone", stub.Zone())
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(lns)+1)
	for i, l := range a.cfg.File.Listen {
		f := &transport.Forwarder{Listener: lns[i], Opener: a, Target: l.Target, Log: a.log.With("listener", l.Name)}
		f.Carry = func(ctx context.Context, local transport.TCP) { a.carry(ctx, f, local) }
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.Serve(ctx); err != nil {
				errc <- err
				cancel()
			}
		}()
		a.log.Info("listening", "listener", l.Name, "address", lns[i].Addr().String(), "target", l.Target)
	}
	wg.Add(3)
	go func() {
		defer wg.Done()
		a.connect(ctx)
	}()
	go func() {
		defer wg.Done()
		a.peers.run(ctx)
	}()
	go func() {
		defer wg.Done()
		a.renewLoop(ctx)
	}()
	if a.cfg.Ready != nil {
		a.cfg.Ready()
	}
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// OpenStream implements transport.StreamOpener: it opens the stream
// through the first gateway of the list that is connected, so it fails
// over to the next at once when one is gone, and back when it returns.
func (a *Agent) OpenStream(ctx context.Context) (*quicStream, error) {
	a.gatewayLinks()
	return a.opener.Load().OpenStream(ctx)
}

// connected reports the gateways the agent is connected to now.
func (a *Agent) connected() []string {
	var out []string
	for _, l := range a.gatewayLinks() {
		if s := l.sess.Load(); s != nil && s.conn.Context().Err() == nil {
			out = append(out, l.addr)
		}
	}
	return out
}

// apiClient returns a client of the gateway's HTTPS API, with the agent's
// certificate when it has one.
func (a *Agent) apiClient(withCert bool) (*apiclient.Client, error) {
	gw, pin := a.cfg.Gateway, a.cfg.Pin
	if id := a.identity(); id != nil {
		if gw == "" {
			gw = id.Gateway
		}
		// The identity's pin: run checked that --ca-pin is it or one it
		// had before a CA rotation moved it (followPin).
		pin = id.Pin
	}
	if zone, isSRV, _ := discovery.ParseGateway(gw); isSRV {
		if gw = a.currentGateways(); gw == "" {
			return nil, fmt.Errorf("no gateway known yet for srv:%s: check --dns-server and the zone's SRV records", strings.TrimSuffix(zone, "."))
		}
	}
	cfg := apiclient.Config{Gateway: gw, Pin: pin}
	if withCert {
		cfg.Cert = a.cert.Load()
	}
	return apiclient.New(cfg)
}

func (a *Agent) enroll(ctx context.Context) (*Identity, error) {
	if a.cfg.Gateway == "" || a.cfg.Pin == "" {
		return nil, errors.New("enrolment needs --gateway HOST:PORT and --ca-pin sha256:HEX")
	}
	if _, err := trust.ParsePin(a.cfg.Pin); err != nil {
		return nil, err
	}
	c, err := a.apiClient(false)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	k, err := newKeys(nil)
	if err != nil {
		return nil, err
	}
	csr, err := k.csr()
	if err != nil {
		return nil, err
	}
	var resp api.AgentIdentity
	req := api.EnrollRequest{Token: strings.TrimSpace(a.cfg.Token), CSR: csr, SSHHostKey: k.hostPub()}
	if err := c.Do(ctx, http.MethodPost, api.PathEnroll, nil, req, &resp); err != nil {
		var ae *api.Error
		if errors.As(err, &ae) {
			return nil, fmt.Errorf("enrolment refused: %s", ae.Message)
		}
		return nil, fmt.Errorf("enrol: %w", err)
	}
	id, err := k.apply(Identity{Gateway: a.cfg.Gateway, Pin: a.cfg.Pin}, resp)
	if err != nil {
		return nil, err
	}
	if err := a.store.save(id); err != nil {
		return nil, err
	}
	return id, nil
}

// A renewal answered with an older trust bundle than the one in force is
// asked again staleRenewalTries-1 times, staleRenewalWait apart (renew).
const staleRenewalTries = 3

var staleRenewalWait = 2 * time.Second // a variable for tests

// renewLoop renews the certificate at about two thirds of its life. A
// failed renewal keeps the current certificate and retries with backoff.
func (a *Agent) renewLoop(ctx context.Context) {
	var bo transport.Backoff
	bo.Max = time.Minute
	for {
		leaf := a.cert.Load().Leaf
		wait := time.Until(renewAt(leaf.NotBefore, leaf.NotAfter, rand.Float64()))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		last := ""
		for ctx.Err() == nil {
			err := a.renew(ctx)
			if err == nil {
				bo.Reset()
				break
			}
			d := bo.Next()
			// Logged once per change of reason, not at every retry (a
			// locked agent retries until it is unlocked).
			if msg := err.Error(); msg != last {
				last = msg
				expires := a.cert.Load().Leaf.NotAfter
				if isLockedRefusal(err) {
					a.log.Warn("the gateway refuses to renew this agent's certificate: locked by an administrator; keeping the current one and retrying until it is unlocked",
						"expires", expires, "gateway_says", msg)
				} else {
					a.log.Warn("certificate renewal failed; keeping the current one and retrying", "err", err,
						"retry_in", d.Round(time.Second), "expires", expires)
				}
			}
			if !sleep(ctx, d) {
				return
			}
		}
	}
}

func (a *Agent) renew(ctx context.Context) error {
	c, err := a.apiClient(true)
	if err != nil {
		return err
	}
	defer c.Close()
	// The SSH host key stays: only its certificate is renewed, and the SSH
	// endpoint serves the new one at its next handshake.
	host, err := a.identity().hostKey()
	if err != nil {
		return err
	}
	k, err := newKeys(host)
	if err != nil {
		return err
	}
	csr, err := k.csr()
	if err != nil {
		return err
	}
	// An answer with an older trust bundle than the one in force (a
	// gateway that has not reloaded the CA keys of a rotation's step yet,
	// about a second) is asked again. The last answer's certificate is
	// taken whatever its bundle's epoch; its bundle only if the bundle in
	// force cannot anchor that certificate (a store restored from a backup
	// of older keys: withNewerTrust).
	var resp api.AgentIdentity
	for try := 1; ; try++ {
		resp = api.AgentIdentity{}
		if err := c.Do(ctx, http.MethodPost, api.PathRenew, nil, api.RenewRequest{CSR: csr, SSHHostKey: k.hostPub()}, &resp); err != nil {
			return err
		}
		have := a.identity().TrustEpoch
		if resp.CA.Epoch >= have || try == staleRenewalTries {
			break
		}
		a.log.Info("the gateway answered the renewal with an older trust bundle than the one in force; asking again", "epoch", resp.CA.Epoch, "held", have)
		if !sleep(ctx, staleRenewalWait) {
			return ctx.Err()
		}
	}
	a.idMu.Lock()
	held := a.identity()
	id, err := k.apply(*held, resp)
	if err == nil {
		id = id.withNewerTrust(held, a.log)
		err = a.store.save(id)
	}
	if err == nil {
		err = a.setIdentity(id)
	}
	a.idMu.Unlock()
	if err != nil {
		return err
	}
	a.log.Info("certificate renewed", "expires", a.cert.Load().Leaf.NotAfter)
	if id.Pin != held.Pin {
		a.log.Info("the cluster's signing CA changed: this agent now authenticates gateways with its pin", "pin", id.Pin, "was", held.Pin)
	}
	a.reconnectAll()
	a.peers.retireAll()
	return nil
}

// applyTrust takes the trust bundle a gateway sent on the connection s
// (wire.MsgTrust, when its CA keys changed): checked (withTrust), saved
// with the identity, sealed, and in force at once: the peer links' TLS
// and the SSH endpoint's user CAs read the identity at each handshake. A
// bundle refused is logged, and the current one kept.
func (a *Agent) applyTrust(m wire.Control, s *session) {
	var gw []*x509.Certificate
	if s != nil && s.conn != nil {
		gw = s.conn.ConnectionState().TLS.PeerCertificates
	}
	a.idMu.Lock()
	defer a.idMu.Unlock()
	id, changed, err := a.identity().withTrust(m.Trust, gw)
	var stale *staleTrustError
	if errors.As(err, &stale) {
		a.log.Info("ignored a trust bundle older than the one in force (a gateway that had not reloaded the CA keys yet)", "epoch", stale.got, "held", stale.have)
		return
	}
	if err != nil {
		a.log.Warn("refused the trust bundle the gateway sent; keeping the current one", "err", err)
		return
	}
	if !changed {
		a.log.Debug("trust bundle from the gateway: unchanged")
		return
	}
	if err := a.store.save(id); err != nil {
		a.log.Error("cannot save the trust bundle the gateway sent; keeping the current one until the next renewal", "err", err)
		return
	}
	// The certificate is the same: only the identity changes.
	prevPin := a.identity().Pin
	a.mu.Lock()
	a.id = id
	a.mu.Unlock()
	if id.Pin != prevPin {
		a.log.Info("the cluster's signing CA changed: this agent now authenticates gateways with its pin", "pin", id.Pin, "was", prevPin)
	}
	a.log.Info("trust bundle from the gateway saved and in force", "x509_cas", strings.Count(id.CAPEM, "-----BEGIN CERTIFICATE-----"),
		"ssh_user_cas", len(id.UserCAs), "ssh_host_cas", len(id.HostCAs), "x509_pin", m.Trust.Pin)
}

// reconnectAll replaces the connection to every gateway by one with the
// current certificate; the old ones drain their streams.
func (a *Agent) reconnectAll() {
	for _, l := range a.gatewayLinks() {
		select {
		case l.renewed <- struct{}{}:
		default:
		}
	}
}

func agentVersion() string { return version.Version }

// isLockedRefusal reports whether the gateway refused an API call because
// the agent is locked.
func isLockedRefusal(err error) bool {
	var ae *api.Error
	return errors.As(err, &ae) && ae.Code == api.CodeUnauthenticated && strings.Contains(ae.Message, "is locked")
}

// bindError says why a listener could not be bound, and what to do.
func bindError(l Listen, err error) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("listener %s: %s is already in use by another program: stop it, or give the listener another address in the config", l.Name, l.Address)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("listener %s: %s is not an address of this machine: use a loopback address such as 127.0.0.1 or one of this machine's addresses", l.Name, l.Address)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("listener %s: binding %s needs privileges (ports below 1024 need root or CAP_NET_BIND_SERVICE): use a port from 1024 up", l.Name, l.Address)
	}
	return fmt.Errorf("listener %s: %w", l.Name, err)
}
