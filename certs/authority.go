package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

// Lifetimes.
const (
	// DefaultUserTTL is the lifetime of a user, agent or gateway certificate
	// when the request gives none (shortened to the applicable maximum if
	// that is lower).
	DefaultUserTTL = time.Hour
	// ClusterMaxTTL is the hard maximum lifetime of any user, agent or
	// gateway certificate. Config.MaxTTL may lower it, never raise it.
	ClusterMaxTTL = 12 * time.Hour
	// ClockSkew is how far NotBefore and valid_after are backdated, so that a
	// certificate is accepted at once by a peer whose clock is a little slow.
	ClockSkew = time.Minute
	// DefaultHostTTL is the lifetime of an SSH host certificate when the
	// request gives none.
	DefaultHostTTL = 30 * 24 * time.Hour
	// MaxHostTTL is the maximum lifetime of an SSH host certificate. Host
	// certificates are not bound by the user maximum.
	MaxHostTTL = 90 * 24 * time.Hour
	// CALifetime is the lifetime of a new X.509 CA certificate.
	CALifetime = 10 * 365 * 24 * time.Hour
)

// Config configures an Authority. The zero value of each field except
// Cluster means its default.
type Config struct {
	// Cluster is the cluster name; it must pass
	// identity.ValidateName("cluster", …).
	Cluster string
	// Clock returns the current time; nil means time.Now.
	Clock func() time.Time
	// Rand is the source of key material, serial numbers and SSH nonces;
	// nil means crypto/rand.Reader. It need not be safe for concurrent use.
	Rand io.Reader
	// MaxTTL is the cluster's maximum certificate lifetime; zero means
	// ClusterMaxTTL, and values above ClusterMaxTTL are refused.
	MaxTTL time.Duration
	// Epoch is the store's CA epoch of the keys Load and LoadWith are
	// given (store.ReadCAKeys): the version of the trust bundle (Epoch).
	Epoch uint64
}

// resolve validates c and fills in its defaults.
func (c Config) resolve() (Config, error) {
	if err := identity.ValidateName("cluster", c.Cluster); err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.Reader
	}
	switch {
	case c.MaxTTL < 0:
		return c, fmt.Errorf("config: maximum TTL %v is negative", c.MaxTTL)
	case c.MaxTTL == 0:
		c.MaxTTL = ClusterMaxTTL
	case c.MaxTTL > ClusterMaxTTL:
		return c, fmt.Errorf("config: %w: maximum TTL %v exceeds the hard cluster maximum of %v", ErrTTLTooLong, c.MaxTTL, ClusterMaxTTL)
	}
	return c, nil
}

// Authority is the cluster CA: it holds the active signing key of each kind
// and the public keys of every trusted CA. It is safe for concurrent use.
type Authority struct {
	cluster string
	clock   func() time.Time
	maxTTL  time.Duration

	randMu sync.Mutex // guards rand, which need not be safe for concurrent use
	rand   io.Reader
	// sysRand is whether rand is crypto/rand's reader (newP256Key).
	sysRand bool

	// The CA keys: replaced as a whole by Reload during a rotation
	// (carotation.go), so that a signature and the chain served with it
	// always come from one set.
	keys     atomic.Pointer[keyset]
	reloadMu sync.Mutex // serialises Reload
	// open opens an active key from the store (Load, LoadWith); nil for an
	// Authority made by Generate, which cannot Reload.
	open func(store.CAKey) (crypto.Signer, error)
}

// keyset is one consistent set of CA keys.
type keyset struct {
	xca    x509CA
	userCA sshCA
	hostCA sshCA
	// gen counts the reloads (Generation).
	gen uint64
	// epoch is the store's CA epoch the keys were read at (Epoch).
	epoch uint64
	// digest identifies the stored keys it was made of (Refresh).
	digest [32]byte
}

// ks returns the current key set.
func (a *Authority) ks() *keyset { return a.keys.Load() }

// x509CA is the X.509 CA: the active certificate and key, and every trusted
// CA certificate.
type x509CA struct {
	cert    *x509.Certificate
	key     crypto.Signer
	trusted []*x509.Certificate // the active one first
	pool    *x509.CertPool
	// cross are certificates of the active key signed by the CA it
	// replaced (a rotation's cross-signature), so that a peer pinning the
	// old CA still verifies what the new one signs.
	cross []*x509.Certificate
	// prev are the certificates of the CAs that made cross.
	prev []*x509.Certificate
}

func newX509CA(active *x509.Certificate, key crypto.Signer, others []*x509.Certificate) x509CA {
	ca := x509CA{cert: active, key: key, trusted: []*x509.Certificate{active}, pool: x509.NewCertPool()}
	ca.pool.AddCert(active)
	for _, c := range others {
		if !slices.ContainsFunc(ca.trusted, c.Equal) {
			ca.trusted = append(ca.trusted, c)
			ca.pool.AddCert(c)
		}
	}
	return ca
}

// sshCA is an SSH CA: the active key, and every trusted CA public key.
type sshCA struct {
	key     crypto.Signer
	signer  ssh.Signer
	trusted []ssh.PublicKey // the active one first
}

func newSSHCA(key crypto.Signer, others []ssh.PublicKey) (sshCA, error) {
	signer, err := ssh.NewSignerFromSigner(key)
	if err != nil {
		return sshCA{}, err
	}
	ca := sshCA{key: key, signer: signer, trusted: []ssh.PublicKey{signer.PublicKey()}}
	for _, k := range others {
		if !slices.ContainsFunc(ca.trusted, func(t ssh.PublicKey) bool { return bytes.Equal(t.Marshal(), k.Marshal()) }) {
			ca.trusted = append(ca.trusted, k)
		}
	}
	return ca, nil
}

// newAuthority makes an Authority without keys for a resolved c.
func newAuthority(c Config) *Authority {
	return &Authority{cluster: c.Cluster, clock: c.Clock, maxTTL: c.MaxTTL, rand: c.Rand, sysRand: c.Rand == rand.Reader}
}

// Generate makes a new CA set for cfg.Cluster: a self-signed ECDSA P-256
// X.509 CA valid for CALifetime (the key type browsers accept, so that the
// gateway's own certificate opens the web console), and an Ed25519 SSH
// user CA and SSH host CA. Store it with Export.
func Generate(cfg Config) (*Authority, error) {
	c, err := cfg.resolve()
	if err != nil {
		return nil, fmt.Errorf("generate CA: %w", err)
	}
	a := newAuthority(c)
	x509Key, err := a.newX509CAKey()
	if err != nil {
		return nil, fmt.Errorf("generate CA: %w", err)
	}
	var sshKeys [2]ed25519.PrivateKey
	for i := range sshKeys {
		if sshKeys[i], err = newEd25519Key(a.reader()); err != nil {
			return nil, fmt.Errorf("generate CA: %w", err)
		}
	}
	return a.withKeys(Signers{X509: x509Key, SSHUser: sshKeys[0], SSHHost: sshKeys[1]})
}

// newX509CAKey makes a new local X.509 CA key: ECDSA P-256.
func (a *Authority) newX509CAKey() (*ecdsa.PrivateKey, error) {
	return newP256Key(a.reader(), a.sysRand)
}

// Signers are the CA keys of a set that GenerateWith makes: keys held
// elsewhere (a Vault Transit key behind a crypto.Signer), which the
// Authority signs with and never sees, or local private keys. Each must be
// Ed25519 or ECDSA P-256; the X.509 one should be ECDSA P-256, because
// browsers accept no Ed25519 in a TLS certificate chain. A signer held
// elsewhere should implement KeyRef, whose reference Export stores in
// place of a sealed private key.
type Signers struct {
	X509, SSHUser, SSHHost crypto.Signer
}

// KeyRef is implemented by a signer whose key lives elsewhere: Ref names
// it for the store (for example "vault-transit:tunnel-prod-x509-ca"), and
// Describe names the key and version that signed, for audit events.
type KeyRef interface {
	Ref() string
	Describe() string
}

// GenerateWith makes a new CA set for cfg.Cluster with keys held elsewhere
// (Signers): the X.509 CA certificate is self-signed through keys.X509.
func GenerateWith(cfg Config, keys Signers) (*Authority, error) {
	c, err := cfg.resolve()
	if err != nil {
		return nil, fmt.Errorf("generate CA: %w", err)
	}
	if keys.X509 == nil || keys.SSHUser == nil || keys.SSHHost == nil {
		return nil, errors.New("generate CA: a signer is missing")
	}
	return newAuthority(c).withKeys(keys)
}

// withKeys gives a its first keys: the X.509 CA certificate is
// self-signed through keys.X509.
func (a *Authority) withKeys(keys Signers) (*Authority, error) {
	for _, k := range []struct {
		name string
		key  crypto.Signer
	}{{"X.509", keys.X509}, {"SSH user", keys.SSHUser}, {"SSH host", keys.SSHHost}} {
		if err := checkPublicKey(k.key.Public()); err != nil {
			return nil, fmt.Errorf("generate CA: the %s CA key: %w", k.name, err)
		}
	}
	cert, err := a.newX509CACert(keys.X509)
	if err != nil {
		return nil, fmt.Errorf("generate CA: %w", err)
	}
	ks := &keyset{xca: newX509CA(cert, keys.X509, nil)}
	if ks.userCA, err = newSSHCA(keys.SSHUser, nil); err != nil {
		return nil, fmt.Errorf("generate CA: SSH user CA: %w", err)
	}
	if ks.hostCA, err = newSSHCA(keys.SSHHost, nil); err != nil {
		return nil, fmt.Errorf("generate CA: SSH host CA: %w", err)
	}
	a.keys.Store(ks)
	return a, nil
}

// RefPrefix starts the SealedPrivate of a CA key held elsewhere: what
// follows is its KeyRef.Ref, not a secret.
const RefPrefix = "ref:"

// Signer describes the key that signs certificates of kind, for audit
// events: "vault key NAME version N" for a key held in Vault, "local key"
// otherwise.
func (a *Authority) Signer(kind store.CertKind) string {
	var k crypto.Signer
	ks := a.ks()
	switch kind {
	case store.CertX509:
		k = ks.xca.key
	case store.CertSSHUser:
		k = ks.userCA.key
	case store.CertSSHHost:
		k = ks.hostCA.key
	}
	if r, ok := k.(KeyRef); ok {
		return r.Describe()
	}
	return "local key"
}

// newX509CACert self-signs a CA certificate for key.
func (a *Authority) newX509CACert(key crypto.Signer) (*x509.Certificate, error) {
	serial, err := a.x509Serial()
	if err != nil {
		return nil, err
	}
	now := a.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: a.cluster + " tunnel CA"},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(a.reader(), tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-signing the X.509 CA certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// caLabel is the seal label of a CA private key of the given kind.
func caLabel(kind store.CertKind) string { return "ca/" + string(kind) }

// Load rebuilds the Authority from the keys kept in the store, opening the
// active private keys with s. Each kind ("x509", "ssh-user", "ssh-host") must
// have exactly one active key, which signs; inactive keys are trusted but
// never opened.
func Load(cfg Config, keys []store.CAKey, s seal.Sealer) (*Authority, error) {
	if s == nil {
		return nil, errors.New("load CA: no sealer to open the CA keys with")
	}
	return LoadWith(cfg, keys, func(k store.CAKey) (crypto.Signer, error) { return openSealedKey(k, s) })
}

// LoadWith is Load with the active keys opened by open: a sealed private
// key, or a reference to a key held elsewhere (RefPrefix, GenerateWith).
// Whatever open returns must match the key's public part in the store.
func LoadWith(cfg Config, keys []store.CAKey, open func(store.CAKey) (crypto.Signer, error)) (*Authority, error) {
	c, err := cfg.resolve()
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	a := newAuthority(c)
	a.open = open
	ks, err := buildKeyset(keys, open)
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	ks.epoch = c.Epoch
	a.keys.Store(ks)
	return a, nil
}

// buildKeyset makes the key set of keys, opening the active ones with
// open.
func buildKeyset(keys []store.CAKey, open func(store.CAKey) (crypto.Signer, error)) (*keyset, error) {
	var (
		x509Cross   []*x509.Certificate
		x509Prev    []*x509.Certificate
		x509Active  *x509.Certificate
		x509Key     crypto.Signer
		x509Others  []*x509.Certificate
		sshActive   = map[store.CertKind]crypto.Signer{}
		sshOthers   = map[store.CertKind][]ssh.PublicKey{}
		activeCount = map[store.CertKind]int{}
	)
	for _, k := range keys {
		kind := store.CertKind(k.Kind)
		switch kind {
		case store.CertX509:
			cert, cross, prev, err := parseCACerts(k.Public)
			if err != nil {
				return nil, fmt.Errorf("x509 CA key created %s: %w", k.CreatedAt.Format(time.RFC3339), err)
			}
			if !k.Active {
				x509Others = append(x509Others, cert)
				break
			}
			activeCount[kind]++
			if x509Key, err = openCAKey(k, open, cert.PublicKey); err != nil {
				return nil, err
			}
			x509Active, x509Cross, x509Prev = cert, cross, prev
		case store.CertSSHUser, store.CertSSHHost:
			pub, err := parseSSHCAKey(k.Public)
			if err != nil {
				return nil, fmt.Errorf("%s CA key created %s: %w", kind, k.CreatedAt.Format(time.RFC3339), err)
			}
			if !k.Active {
				sshOthers[kind] = append(sshOthers[kind], pub)
				break
			}
			activeCount[kind]++
			cpub := pub.(ssh.CryptoPublicKey).CryptoPublicKey()
			if sshActive[kind], err = openCAKey(k, open, cpub); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("unknown CA key kind %q in the store", k.Kind)
		}
	}
	for _, kind := range []store.CertKind{store.CertX509, store.CertSSHUser, store.CertSSHHost} {
		switch n := activeCount[kind]; {
		case n == 0:
			return nil, fmt.Errorf("the store holds no active %s CA key; was the cluster initialised?", kind)
		case n > 1:
			return nil, fmt.Errorf("the store holds %d active %s CA keys; exactly one must be active", n, kind)
		}
	}
	ks := &keyset{xca: newX509CA(x509Active, x509Key, x509Others)}
	ks.xca.cross, ks.xca.prev = x509Cross, x509Prev
	var err error
	if ks.userCA, err = newSSHCA(sshActive[store.CertSSHUser], sshOthers[store.CertSSHUser]); err != nil {
		return nil, fmt.Errorf("SSH user CA: %w", err)
	}
	if ks.hostCA, err = newSSHCA(sshActive[store.CertSSHHost], sshOthers[store.CertSSHHost]); err != nil {
		return nil, fmt.Errorf("SSH host CA: %w", err)
	}
	ks.digest = keysDigest(keys)
	return ks, nil
}

// openCAKey opens the key of k with open and checks that it belongs to
// pub.
func openCAKey(k store.CAKey, open func(store.CAKey) (crypto.Signer, error), pub crypto.PublicKey) (crypto.Signer, error) {
	key, err := open(k)
	if err != nil {
		return nil, err
	}
	if !samePublicKey(key.Public(), pub) {
		return nil, fmt.Errorf("%s CA private key does not match its public key", k.Kind)
	}
	return key, nil
}

// OpenSealedKey opens the CA private key of k, sealed with s (a KEK file's
// keyring): for moving it elsewhere (tunnel-gateway vault import). A key
// held elsewhere already (a reference) is an error.
func OpenSealedKey(k store.CAKey, s seal.Sealer) (crypto.Signer, error) {
	return openSealedKey(k, s)
}

// openSealedKey opens a CA private key sealed with s.
func openSealedKey(k store.CAKey, s seal.Sealer) (crypto.Signer, error) {
	if bytes.HasPrefix(k.SealedPrivate, []byte(RefPrefix)) {
		return nil, fmt.Errorf("the %s CA key is held elsewhere (%s), not sealed here: give the gateway that key backend (--vault-addr)",
			k.Kind, k.SealedPrivate[len(RefPrefix):])
	}
	der, err := s.Open(k.SealedPrivate, caLabel(store.CertKind(k.Kind)))
	if err != nil {
		return nil, fmt.Errorf("cannot open the sealed %s CA private key (is this the key-encryption key the cluster was created with?): %w", k.Kind, err)
	}
	defer clear(der)
	key, err := parseCAPrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("%s CA private key: %w", k.Kind, err)
	}
	return key, nil
}

// Export seals the active CA keys with s for the store, one per kind, marked
// active and created now. Inactive keys from a rotation are not included:
// the store keeps them already.
func (a *Authority) Export(s seal.Sealer) ([]store.CAKey, error) {
	if s == nil {
		return nil, errors.New("export CA: no sealer to seal the CA keys with")
	}
	now := a.now()
	ks := a.ks()
	out := make([]store.CAKey, 0, 3)
	for _, e := range []struct {
		kind   store.CertKind
		public []byte
		key    crypto.Signer
	}{
		{store.CertX509, ks.xca.cert.Raw, ks.xca.key},
		{store.CertSSHUser, ks.userCA.signer.PublicKey().Marshal(), ks.userCA.key},
		{store.CertSSHHost, ks.hostCA.signer.PublicKey().Marshal(), ks.hostCA.key},
	} {
		sealed, err := sealCAKey(e.key, e.kind, s)
		if err != nil {
			return nil, fmt.Errorf("export CA: %w", err)
		}
		out = append(out, store.CAKey{
			Kind:          string(e.kind),
			Public:        bytes.Clone(e.public),
			SealedPrivate: sealed,
			CreatedAt:     now,
			Active:        true,
		})
	}
	return out, nil
}

// sealCAKey is what the store keeps of key: where it lives when it is
// held elsewhere (KeyRef), else the private key sealed with s.
func sealCAKey(key crypto.Signer, kind store.CertKind, s seal.Sealer) ([]byte, error) {
	if r, ok := key.(KeyRef); ok {
		// Held elsewhere: the store keeps where, not a secret.
		return []byte(RefPrefix + r.Ref()), nil
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("%s private key: %w", kind, err)
	}
	sealed, err := s.Seal(der, caLabel(kind))
	clear(der)
	if err != nil {
		return nil, fmt.Errorf("sealing the %s private key: %w", kind, err)
	}
	return sealed, nil
}

// Cluster returns the cluster name.
func (a *Authority) Cluster() string { return a.cluster }

// MaxTTL returns the cluster's maximum certificate lifetime.
func (a *Authority) MaxTTL() time.Duration { return a.maxTTL }

// X509CA returns the active X.509 CA certificate, which signs.
func (a *Authority) X509CA() *x509.Certificate { return a.ks().xca.cert }

// X509KeyType names the type of the active X.509 CA key: "ECDSA P-256"
// (new clusters), or "Ed25519" (a cluster made before ECDSA became the
// default, until an x509 rotation): browsers refuse a gateway certificate
// that an Ed25519 CA signed, so its web console needs an operator's
// certificate (--tls-cert) until then.
func (a *Authority) X509KeyType() string { return caKeyType(a.ks().xca.cert.PublicKey) }

// X509CAs returns every trusted X.509 CA certificate, the active one first.
func (a *Authority) X509CAs() []*x509.Certificate { return slices.Clone(a.ks().xca.trusted) }

// X509Pool returns a new pool of every trusted X.509 CA certificate, for
// verifying peers.
func (a *Authority) X509Pool() *x509.CertPool { return a.ks().xca.pool.Clone() }

// X509Roots returns the trusted X.509 CA certificates as the one pool that
// every caller shares until the CA keys change (a rotation step makes a new
// one): read only, use X509Pool for a copy to change. Its identity stands
// for the set of trusted CAs, which a verification cache keys on
// (trust.ChainCache).
func (a *Authority) X509Roots() *x509.CertPool { return a.ks().xca.pool }

// Pin returns the pin of the active X.509 CA (see trust.Pin).
func (a *Authority) Pin() string { return trust.Pin(a.ks().xca.cert) }

// SSHUserCA returns the active SSH user CA public key, which signs.
func (a *Authority) SSHUserCA() ssh.PublicKey { return a.ks().userCA.trusted[0] }

// SSHUserCAs returns every trusted SSH user CA public key, the active one
// first: the keys an SSH server lists in TrustedUserCAKeys.
func (a *Authority) SSHUserCAs() []ssh.PublicKey { return slices.Clone(a.ks().userCA.trusted) }

// SSHHostCA returns the active SSH host CA public key, which signs.
func (a *Authority) SSHHostCA() ssh.PublicKey { return a.ks().hostCA.trusted[0] }

// SSHHostCAs returns every trusted SSH host CA public key, the active one
// first: the keys a client lists as @cert-authority in known_hosts.
func (a *Authority) SSHHostCAs() []ssh.PublicKey { return slices.Clone(a.ks().hostCA.trusted) }

func (a *Authority) now() time.Time { return a.clock() }

// reader returns a.rand made safe for concurrent use.
func (a *Authority) reader() io.Reader { return lockedReader{a} }

type lockedReader struct{ a *Authority }

func (r lockedReader) Read(p []byte) (int, error) {
	r.a.randMu.Lock()
	defer r.a.randMu.Unlock()
	return r.a.rand.Read(p)
}

// maxSerialTries bounds the retries for a zero serial: a source that gives
// nothing but zeros is broken.
const maxSerialTries = 8

// x509Serial returns a random positive 128-bit serial number.
func (a *Authority) x509Serial() (*big.Int, error) {
	b := make([]byte, 16)
	for range maxSerialTries {
		if _, err := io.ReadFull(a.reader(), b); err != nil {
			return nil, fmt.Errorf("reading serial number: %w", err)
		}
		if n := new(big.Int).SetBytes(b); n.Sign() > 0 {
			return n, nil
		}
	}
	return nil, errors.New("reading serial number: the random source returns only zeros")
}

// sshSerial returns a random non-zero 64-bit serial number.
func (a *Authority) sshSerial() (uint64, error) {
	var b [8]byte
	for range maxSerialTries {
		if _, err := io.ReadFull(a.reader(), b[:]); err != nil {
			return 0, fmt.Errorf("reading serial number: %w", err)
		}
		if n := binary.BigEndian.Uint64(b[:]); n != 0 {
			return n, nil
		}
	}
	return 0, errors.New("reading serial number: the random source returns only zeros")
}
