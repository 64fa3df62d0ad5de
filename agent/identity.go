package agent

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/trust"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// Files in the agent's data directory (0700).
const (
	KEKFile      = "kek"             // key-encryption key, 0600
	IdentityFile = "identity.sealed" // the sealed identity, 0600
)

// Identity is what enrolment gives an agent: its key pairs and the
// certificates the gateway signed for them, plus how to reach the gateway.
// It is stored sealed; nothing in it is written in the clear.
type Identity struct {
	Name    string `json:"name"`
	Cluster string `json:"cluster"`
	Gateway string `json:"gateway"`
	// Gateways is the last list DNS gave for Gateway srv:ZONE, used when
	// DNS cannot be reached at start.
	Gateways []string `json:"gateways,omitempty"`
	Pin      string   `json:"ca_pin"`
	KeyDER   []byte   `json:"key"`  // PKCS#8 Ed25519, for mTLS
	CertPEM  string   `json:"cert"` // X.509 client certificate
	CAPEM    string   `json:"ca"`
	HostKey  []byte   `json:"host_key"`  // PKCS#8 Ed25519, the SSH host key
	HostCert string   `json:"host_cert"` // SSH host certificate, authorized_keys form
	// UserCAs are the cluster's SSH user CAs (authorized_keys lines): the
	// node's SSH endpoint trusts them.
	UserCAs []string `json:"user_cas"`
	// HostCAs are the cluster's SSH host CAs (authorized_keys lines).
	HostCAs []string `json:"host_cas,omitempty"`
	// TrustEpoch is the epoch of the trust bundle above (CAPEM, UserCAs,
	// HostCAs: api.CA's Epoch): a pushed bundle of a lower one is older
	// and ignored.
	TrustEpoch uint64 `json:"trust_epoch,omitempty"`
	// FormerPins are the pins Pin replaced when a CA rotation made a new
	// CA sign (trust.FollowPin): the --ca-pin the agent enrolled with is
	// still accepted on its command line.
	FormerPins []string `json:"former_pins,omitempty"`
}

// followPin moves the identity's pin to the signing CA of a trust bundle
// (x509 and pin, from a gateway this identity authenticated) when
// trust.FollowPin says so, and keeps the old one in FormerPins. trusted is
// the X.509 CAs the agent trusted until now.
func (id *Identity) followPin(trusted, x509, pin string) {
	if next, moved := trust.FollowPin(id.Pin, trusted, x509, pin); moved {
		id.FormerPins = append(slices.Clone(id.FormerPins), id.Pin)
		id.Pin = next
	}
}

// knowsPin reports whether pin is this identity's pin or one it had
// before a CA rotation.
func (id *Identity) knowsPin(pin string) bool {
	p, err := trust.ParsePin(pin)
	if err != nil {
		return false
	}
	return p == id.Pin || slices.Contains(id.FormerPins, p)
}

// TLSCertificate returns the identity's certificate and key for mTLS.
func (id *Identity) TLSCertificate() (*tls.Certificate, error) {
	k, err := x509.ParsePKCS8PrivateKey(id.KeyDER)
	if err != nil {
		return nil, fmt.Errorf("agent identity: %w", err)
	}
	blk, _ := pem.Decode([]byte(id.CertPEM))
	if blk == nil {
		return nil, errors.New("agent identity: no certificate")
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("agent identity: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: k, Leaf: leaf}, nil
}

// keys is a fresh key pair for a certificate request.
type keys struct {
	tlsKey  ed25519.PrivateKey
	hostKey ed25519.PrivateKey
}

// newKeys makes a new TLS key, and a new SSH host key unless host is
// given: a renewal keeps the host key (hostKey) and has its certificate
// renewed, so that the SSH endpoint, which signs with the key it started
// with, serves the renewed certificate at once (certs.CertSigner).
func newKeys(host ed25519.PrivateKey) (*keys, error) {
	_, a, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	if host == nil {
		if _, host, err = ed25519.GenerateKey(rand.Reader); err != nil {
			return nil, err
		}
	}
	return &keys{tlsKey: a, hostKey: host}, nil
}

// hostKey returns the identity's SSH host key.
func (id *Identity) hostKey() (ed25519.PrivateKey, error) {
	k, err := x509.ParsePKCS8PrivateKey(id.HostKey)
	if err != nil {
		return nil, fmt.Errorf("agent identity: SSH host key: %w", err)
	}
	hk, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("agent identity: the SSH host key is a %T, not Ed25519", k)
	}
	return hk, nil
}

func (k *keys) csr() (string, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k.tlsKey)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

func (k *keys) hostPub() string {
	pub, _ := ssh.NewPublicKey(k.hostKey.Public())
	return string(ssh.MarshalAuthorizedKey(pub))
}

// apply makes an identity from the keys and the gateway's answer.
func (k *keys) apply(base Identity, resp api.AgentIdentity) (*Identity, error) {
	id := base
	id.Name, id.Cluster = resp.Agent, resp.CA.Cluster
	var err error
	if id.KeyDER, err = x509.MarshalPKCS8PrivateKey(k.tlsKey); err != nil {
		return nil, err
	}
	if id.HostKey, err = x509.MarshalPKCS8PrivateKey(k.hostKey); err != nil {
		return nil, err
	}
	id.CertPEM, id.CAPEM, id.HostCert = resp.X509Certificate, resp.CA.X509, resp.SSHHostCertificate
	id.UserCAs, id.HostCAs, id.TrustEpoch = resp.CA.SSHUserCAs, resp.CA.SSHHostCAs, resp.CA.Epoch
	id.followPin(base.CAPEM, resp.CA.X509, resp.CA.Pin)
	cert, err := id.TLSCertificate()
	if err != nil {
		return nil, err
	}
	if pub, ok := cert.Leaf.PublicKey.(ed25519.PublicKey); !ok || !pub.Equal(k.tlsKey.Public()) {
		return nil, errors.New("the gateway signed another key than ours; refusing the certificate")
	}
	return &id, nil
}

// store keeps the identity sealed in a data directory.
type identityStore struct {
	dir    string
	sealer seal.Sealer
}

func openIdentityStore(dir string) (*identityStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	kek := filepath.Join(dir, KEKFile)
	if _, err := os.Stat(kek); errors.Is(err, fs.ErrNotExist) {
		if err := seal.CreateKeyFile(kek, rand.Reader); err != nil {
			return nil, err
		}
	}
	s, err := seal.NewKeyFileSealer(kek)
	if err != nil {
		return nil, err
	}
	return &identityStore{dir: dir, sealer: s}, nil
}

// load returns the stored identity, or nil if there is none.
func (s *identityStore) load() (*Identity, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, IdentityFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read identity: %w", err)
	}
	pt, err := s.sealer.Open(b, "agent/identity")
	if err != nil {
		return nil, fmt.Errorf("the identity in %s cannot be opened with %s (%w): enrol again with a new join token", s.dir, KEKFile, err)
	}
	var id Identity
	if err := json.Unmarshal(pt, &id); err != nil {
		return nil, fmt.Errorf("the identity in %s is damaged: enrol again with a new join token", s.dir)
	}
	return &id, nil
}

// save writes the identity atomically.
func (s *identityStore) save(id *Identity) error {
	pt, err := json.Marshal(id)
	if err != nil {
		return err
	}
	sealed, err := s.sealer.Seal(pt, "agent/identity")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.dir, ".identity-*")
	if err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err == nil {
		_, err = tmp.Write(sealed)
		if err == nil {
			err = tmp.Sync()
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(s.dir, IdentityFile)); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	return nil
}

// renewAt is when to renew a certificate valid from nb to na: at two thirds
// of its life, minus up to a tenth of it at random so agents spread out.
func renewAt(nb, na time.Time, jitter float64) time.Time {
	life := na.Sub(nb)
	return nb.Add(life*2/3 - time.Duration(jitter*float64(life/10)))
}

// withTrust returns the identity with the trust bundle t a gateway sent
// over its connection (wire.MsgTrust), and whether that changes anything.
// It refuses a bundle of another cluster, one whose certificates or keys
// do not parse, one that no longer holds the X.509 CA that signed this
// agent's own certificate (other agents would then be told to refuse it),
// and one that no longer anchors the certificate chain the gateway
// presented (gw) where the current bundle does, and one older than the
// bundle in force (a lower epoch: a *staleTrustError). The pin follows
// the signing CA of a rotation (followPin).
func (id *Identity) withTrust(t *wire.Trust, gw []*x509.Certificate) (*Identity, bool, error) {
	if err := t.Check(); err != nil {
		return nil, false, err
	}
	if t.Epoch < id.TrustEpoch {
		return nil, false, &staleTrustError{got: t.Epoch, have: id.TrustEpoch}
	}
	if t.Cluster != id.Cluster {
		return nil, false, fmt.Errorf("the bundle is for cluster %q, and this agent belongs to %q", t.Cluster, id.Cluster)
	}
	cas, err := parseCAPEM(t.X509)
	if err != nil {
		return nil, false, fmt.Errorf("the bundle's X.509 CAs: %w", err)
	}
	blk, _ := pem.Decode([]byte(id.CertPEM))
	if blk == nil {
		return nil, false, errors.New("agent identity: no certificate")
	}
	own, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, false, fmt.Errorf("agent identity: %w", err)
	}
	if !anchored([]*x509.Certificate{own}, cas) {
		return nil, false, errors.New("the bundle no longer holds the X.509 CA that signed this agent's certificate (renew it, or enrol again if that CA was removed)")
	}
	if cur, err := parseCAPEM(id.CAPEM); err == nil && anchored(gw, cur) && !anchored(gw, cas) {
		return nil, false, errors.New("the bundle does not hold the X.509 CA of the gateway's certificate")
	}
	for _, kind := range []struct {
		name  string
		lines []string
	}{{"SSH user", t.SSHUserCAs}, {"SSH host", t.SSHHostCAs}} {
		for _, l := range kind.lines {
			k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(l))
			if err != nil {
				return nil, false, fmt.Errorf("the bundle's %s CA %q: %w", kind.name, l, err)
			}
			if _, isCert := k.(*ssh.Certificate); isCert {
				return nil, false, fmt.Errorf("the bundle's %s CA %q is a certificate, not a key", kind.name, l)
			}
		}
	}
	next := *id
	next.followPin(id.CAPEM, t.X509, t.Pin)
	if t.X509 == id.CAPEM && slices.Equal(t.SSHUserCAs, id.UserCAs) && slices.Equal(t.SSHHostCAs, id.HostCAs) && t.Epoch == id.TrustEpoch && next.Pin == id.Pin {
		return id, false, nil
	}
	next.CAPEM, next.UserCAs, next.HostCAs = t.X509, slices.Clone(t.SSHUserCAs), slices.Clone(t.SSHHostCAs)
	next.TrustEpoch = t.Epoch
	return &next, true, nil
}

// withNewerTrust returns id, an identity just renewed from an answer whose
// trust bundle may be older than held's (a lower epoch): then held's
// bundle, pin and epoch stay in force with id's certificate, if held's
// X.509 CAs anchor it (a gateway that had not reloaded a rotation's step
// signed with a CA the agent already trusts); if they do not (a cluster
// restored from a backup of older keys), the answer's bundle is taken,
// with a warning.
func (id *Identity) withNewerTrust(held *Identity, log *slog.Logger) *Identity {
	if id.TrustEpoch >= held.TrustEpoch {
		return id
	}
	cert, err := id.TLSCertificate()
	cas, cerr := parseCAPEM(held.CAPEM)
	if err != nil || cerr != nil || !anchored([]*x509.Certificate{cert.Leaf}, cas) {
		log.Warn("the gateway renewed this agent's certificate with an older trust bundle than the one it holds, and the one it holds does not anchor the new certificate: taking the gateway's (was the cluster's store restored from a backup?)",
			"epoch", id.TrustEpoch, "held", held.TrustEpoch)
		return id
	}
	next := *id
	next.CAPEM, next.UserCAs, next.HostCAs, next.TrustEpoch = held.CAPEM, held.UserCAs, held.HostCAs, held.TrustEpoch
	next.Pin, next.FormerPins = held.Pin, held.FormerPins
	return &next
}

// staleTrustError: a trust bundle older than the one in force (a gateway
// that answered before it reloaded the CA keys of a rotation's step).
type staleTrustError struct{ got, have uint64 }

func (e *staleTrustError) Error() string {
	return fmt.Sprintf("the bundle (CA epoch %d) is older than the one in force (CA epoch %d)", e.got, e.have)
}

// parseCAPEM parses PEM CA certificates.
func parseCAPEM(text string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := []byte(text)
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("a %q PEM block, not a certificate", blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		if !c.IsCA {
			return nil, fmt.Errorf("%q is not a CA certificate", c.Subject.CommonName)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate")
	}
	return out, nil
}

// anchored reports whether one of cas is in chain, or signed one of its
// certificates.
func anchored(chain, cas []*x509.Certificate) bool {
	for _, c := range chain {
		for _, ca := range cas {
			if c.Equal(ca) || c.CheckSignatureFrom(ca) == nil {
				return true
			}
		}
	}
	return false
}
