// Package servercert provides the gateway's TLS server certificate through
// a GetCertificate callback, from one of two sources:
//
//   - [FromCA]: a short-lived certificate issued by the cluster CA for an
//     ECDSA P-256 key that lives only in memory, re-issued in place at two
//     thirds of its life. ECDSA P-256 because browsers accept no Ed25519
//     in TLS: with a cluster CA of that type too (certs.Generate), a
//     browser that trusts the cluster CA opens the web console
//     (docs/CONSOLE.md);
//   - [FromFiles]: an operator's certificate and key (PEM files), reloaded
//     when the files change, without a restart. A reload that fails keeps the
//     certificate that works and logs why.
//
// Both keep the current certificate behind an atomic pointer and do the work
// on the handshake path (at most once per second for files), so there is no
// background goroutine to own.
package servercert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/identity"
)

// Source serves the gateway's current certificate.
type Source interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// CA issues the gateway's certificate from the cluster CA.
type CA struct {
	ca    *certs.Authority
	id    identity.ID
	dns   []string
	ips   []net.IP
	ttl   time.Duration
	clock func() time.Time

	mu  sync.Mutex // serialises re-issuance
	cur atomic.Pointer[tls.Certificate]
	// gen is the generation of the CA keys cur was issued with.
	gen atomic.Uint64
}

// FromCA returns a Source whose certificate names every host in names (DNS
// names or IP addresses) and is valid for ttl (0 means the cluster maximum).
func FromCA(ca *certs.Authority, gatewayName string, names []string, ttl time.Duration, clock func() time.Time) (*CA, error) {
	if clock == nil {
		clock = time.Now
	}
	if ttl == 0 {
		ttl = ca.MaxTTL()
	}
	s := &CA{ca: ca, ttl: ttl, clock: clock,
		id: identity.ID{Cluster: ca.Cluster(), Kind: identity.Gateway, Name: gatewayName}}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			s.ips = append(s.ips, ip)
		} else {
			s.dns = append(s.dns, n)
		}
	}
	if _, err := s.issue(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *CA) issue() (*tls.Certificate, error) {
	gen := s.ca.Generation()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("gateway certificate: %w", err)
	}
	leaf, err := s.ca.IssueX509Server(certs.X509Request{
		ID: s.id, PublicKey: priv.Public(), TTL: s.ttl, DNSNames: s.dns, IPAddresses: s.ips,
	})
	if err != nil {
		return nil, fmt.Errorf("gateway certificate: %w", err)
	}
	c := &tls.Certificate{
		Certificate: s.ca.ServerChain(leaf),
		PrivateKey:  priv,
		Leaf:        leaf,
	}
	s.cur.Store(c)
	s.gen.Store(gen)
	return c, nil
}

// current reports whether c is still what to serve: issued with the CA
// keys in use, not before a CA rotation step (certs.Authority.Reload)
// changed the signing CA or the chain the trusted CAs call for.
func (s *CA) current(c *tls.Certificate) bool {
	return s.gen.Load() == s.ca.Generation() && c == s.cur.Load()
}

// GetCertificate implements Source: it re-issues the certificate once two
// thirds of its lifetime have passed.
func (s *CA) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := s.cur.Load()
	if !needsRenewal(c.Leaf, s.clock()) && s.current(c) {
		return c, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c = s.cur.Load(); !needsRenewal(c.Leaf, s.clock()) && s.current(c) {
		return c, nil
	}
	nc, err := s.issue()
	if err != nil {
		if s.clock().Before(c.Leaf.NotAfter) {
			return c, nil // keep serving the one that still works
		}
		return nil, err
	}
	return nc, nil
}

// Leaf returns the certificate currently served.
func (s *CA) Leaf() *x509.Certificate { return s.cur.Load().Leaf }

func needsRenewal(leaf *x509.Certificate, now time.Time) bool {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return now.After(leaf.NotBefore.Add(life * 2 / 3))
}

// Files serves an operator's certificate and key, reloaded on change.
type Files struct {
	certPath, keyPath string
	log               *slog.Logger
	clock             func() time.Time

	mu        sync.Mutex // guards the fields below
	lastCheck time.Time
	certStat  fileStamp
	keyStat   fileStamp

	cur atomic.Pointer[tls.Certificate]
}

type fileStamp struct {
	mod  time.Time
	size int64
}

// FromFiles loads a PEM certificate chain and key. log may be nil.
func FromFiles(certPath, keyPath string, log *slog.Logger) (*Files, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Files{certPath: certPath, keyPath: keyPath, log: log, clock: time.Now}
	if err := f.reload(); err != nil {
		return nil, err
	}
	return f, nil
}

func stamp(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}, nil
}

func (f *Files) reload() error {
	cs, err := stamp(f.certPath)
	if err != nil {
		return fmt.Errorf("load TLS certificate: %w", err)
	}
	ks, err := stamp(f.keyPath)
	if err != nil {
		return fmt.Errorf("load TLS key: %w", err)
	}
	c, err := tls.LoadX509KeyPair(f.certPath, f.keyPath)
	if err != nil {
		return fmt.Errorf("load TLS certificate %s and key %s: %w", f.certPath, f.keyPath, err)
	}
	f.certStat, f.keyStat = cs, ks
	f.cur.Store(&c)
	return nil
}

// GetCertificate implements Source.
func (f *Files) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.clock()
	if now.Sub(f.lastCheck) >= time.Second {
		f.lastCheck = now
		cs, err1 := stamp(f.certPath)
		ks, err2 := stamp(f.keyPath)
		if err1 == nil && err2 == nil && (cs != f.certStat || ks != f.keyStat) {
			if err := f.reload(); err != nil {
				f.log.Warn("TLS certificate changed on disk but cannot be loaded; still serving the previous one", "err", err)
				// Remember the stamps so the same bad files are not retried
				// on every handshake; the next change triggers a new try.
				f.certStat, f.keyStat = cs, ks
			} else {
				f.log.Info("reloaded TLS certificate", "cert", f.certPath)
			}
		}
	}
	return f.cur.Load(), nil
}
