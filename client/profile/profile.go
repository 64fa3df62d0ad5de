// Package profile keeps the engineer's login state under TUNNEL_HOME
// (default ~/.tunnel): which gateways and CA pin, the private key made on
// this machine, and the certificates the gateway signed for it.
//
//	TUNNEL_HOME/            0700
//	  profile.json          gateway, CA pin, user, roles, logins (no secrets)
//	  key                   Ed25519 private key, OpenSSH format, 0600
//	  key.pub               its public key
//	  key-cert.pub          SSH user certificate
//	  tls.crt               X.509 client certificate (PEM)
//	  ca.pem                the cluster's X.509 CA (PEM)
//	  known_hosts           @cert-authority line trusting the SSH host CA
//
// The names next to key follow OpenSSH's conventions, so `ssh -i
// TUNNEL_HOME/key` picks up the certificate by itself. Every file is written
// atomically (temporary file, then rename).
package profile

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/discovery"
)

// File names inside the home directory.
const (
	ProfileFile   = "profile.json"
	KeyFile       = "key"
	PubKeyFile    = "key.pub"
	SSHCertFile   = "key-cert.pub"
	TLSCertFile   = "tls.crt"
	CAFile        = "ca.pem"
	KnownHostFile = "known_hosts"
)

// Home returns the directory named by TUNNEL_HOME, or ~/.tunnel.
func Home() (string, error) {
	if h := os.Getenv("TUNNEL_HOME"); h != "" {
		return h, nil
	}
	u, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find home directory (set TUNNEL_HOME): %w", err)
	}
	return filepath.Join(u, ".tunnel"), nil
}

// Profile is the non-secret part of the login state.
type Profile struct {
	// Gateway is HOST:PORT, or several separated by commas (gateways
	// that share one store): every command tries them in this order and
	// fails over to the next (pkg/apiclient).
	Gateway string `json:"gateway"`
	// DNSServer (HOST:PORT) resolves a Gateway of srv:ZONE; empty means
	// this machine's resolvers.
	DNSServer string    `json:"dns_server,omitempty"`
	CAPin     string    `json:"ca_pin"`
	Cluster   string    `json:"cluster,omitempty"`
	User      string    `json:"user"`
	Roles     []string  `json:"roles,omitempty"`
	Logins    []string  `json:"logins,omitempty"`
	NotAfter  time.Time `json:"not_after,omitzero"`
}

// Resolved returns the profile with Gateway as a list of HOST:PORT: for
// srv:ZONE, the gateways DNS lists now (the SRV records the gateways
// publish); otherwise the profile as it is.
func (p Profile) Resolved(ctx context.Context) (Profile, error) {
	zone, isSRV, err := discovery.ParseGateway(p.Gateway)
	if err != nil || !isSRV {
		return p, err
	}
	gws, _, err := discovery.Resolve(ctx, zone, p.DNSServer)
	if err != nil {
		return p, fmt.Errorf("find the gateways of %s in DNS: %w (check --dns-server, or give --gateway HOST:PORT)", p.Gateway, err)
	}
	p.Gateway = strings.Join(gws, ",")
	return p, nil
}

// Gateways returns the profile's gateways, in order.
func (p Profile) Gateways() []string {
	var out []string
	for _, g := range strings.Split(p.Gateway, ",") {
		if g = strings.TrimSpace(g); g != "" {
			out = append(out, g)
		}
	}
	return out
}

// FirstGateway returns the first of the profile's gateways ("" if none).
func (p Profile) FirstGateway() string {
	if gws := p.Gateways(); len(gws) > 0 {
		return gws[0]
	}
	return ""
}

// ErrNotLoggedIn is returned when there is no profile or no certificate.
var ErrNotLoggedIn = errors.New("you are not logged in: run tunnel login --gateway HOST:PORT --user NAME --ca-pin sha256:HEX")

// loggedOut is ErrNotLoggedIn for a profile that is kept (tunnel logout
// removes only the key and certificates): a plain tunnel login will do.
type loggedOut struct{}

func (loggedOut) Error() string {
	return "you are not logged in: run tunnel login (your profile keeps the gateway, user and CA pin)"
}
func (loggedOut) Unwrap() error { return ErrNotLoggedIn }

// notLoggedIn is the error for missing credentials: loggedOut when the
// profile is there, ErrNotLoggedIn otherwise.
func (d Dir) notLoggedIn() error {
	if _, err := os.Stat(d.file(ProfileFile)); err == nil {
		return loggedOut{}
	}
	return ErrNotLoggedIn
}

// Dir is one TUNNEL_HOME directory.
type Dir struct{ Path string }

// Open returns the Dir at TUNNEL_HOME.
func Open() (Dir, error) {
	h, err := Home()
	return Dir{Path: h}, err
}

func (d Dir) file(name string) string { return filepath.Join(d.Path, name) }

// File returns the path of a file in the directory.
func (d Dir) File(name string) string { return d.file(name) }

// Load reads profile.json; ErrNotLoggedIn if there is none.
func (d Dir) Load() (Profile, error) {
	var p Profile
	b, err := os.ReadFile(d.file(ProfileFile))
	if errors.Is(err, fs.ErrNotExist) {
		return p, ErrNotLoggedIn
	}
	if err != nil {
		return p, fmt.Errorf("read profile: %w", err)
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("profile %s is damaged (%v): remove it and run tunnel login", d.file(ProfileFile), err)
	}
	return p, nil
}

// SaveProfile writes profile.json.
func (d Dir) SaveProfile(p Profile) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return d.write(ProfileFile, append(b, '\n'))
}

// write stores data in name atomically with mode 0600, creating the
// directory with 0700.
func (d Dir) write(name string, data []byte) error {
	if err := os.MkdirAll(d.Path, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", d.Path, err)
	}
	if err := os.Chmod(d.Path, 0o700); err != nil {
		return fmt.Errorf("secure %s: %w", d.Path, err)
	}
	f, err := os.CreateTemp(d.Path, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp, d.file(name)); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// Key is a key pair made on this machine.
type Key struct {
	Private ed25519.PrivateKey
	SSH     ssh.PublicKey
}

// NewKey makes a new Ed25519 key pair.
func NewKey() (*Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	pub, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return &Key{Private: priv, SSH: pub}, nil
}

// CSR returns a PEM certificate request for the key, proving possession.
func (k *Key) CSR(user string) (string, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k.Private)
	if err != nil {
		return "", fmt.Errorf("create certificate request: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

// Credentials is what a login brings back.
type Credentials struct {
	Key        *Key
	TLSCertPEM string
	SSHCert    string // authorized_keys line, may be empty
	CAPEM      string
	SSHHostCAs []string
	Cluster    string
}

// SaveCredentials replaces the key and certificates. Files of the previous
// login that this one lacks (an SSH certificate) are removed.
func (d Dir) SaveCredentials(c Credentials) error {
	block, err := ssh.MarshalPrivateKey(crypto.PrivateKey(c.Key.Private), "tunnel")
	if err != nil {
		return fmt.Errorf("encode private key: %w", err)
	}
	if err := d.write(KeyFile, pem.EncodeToMemory(block)); err != nil {
		return err
	}
	if err := d.write(PubKeyFile, ssh.MarshalAuthorizedKey(c.Key.SSH)); err != nil {
		return err
	}
	if err := d.write(TLSCertFile, []byte(c.TLSCertPEM)); err != nil {
		return err
	}
	if err := d.write(CAFile, []byte(c.CAPEM)); err != nil {
		return err
	}
	if c.SSHCert != "" {
		if err := d.write(SSHCertFile, []byte(c.SSHCert+"\n")); err != nil {
			return err
		}
	} else if err := os.Remove(d.file(SSHCertFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	var kh strings.Builder
	for _, ca := range c.SSHHostCAs {
		fmt.Fprintf(&kh, "@cert-authority * %s\n", ca)
	}
	return d.write(KnownHostFile, []byte(kh.String()))
}

// RemoveCredentials deletes the key and certificates (logout). The profile
// stays, so the next login needs no flags.
func (d Dir) RemoveCredentials() error {
	_, err := d.removeCredentials()
	return err
}

// removeCredentials is RemoveCredentials, also saying how many files it
// removed.
func (d Dir) removeCredentials() (removed int, err error) {
	var errs []error
	for _, n := range []string{KeyFile, PubKeyFile, SSHCertFile, TLSCertFile} {
		err := os.Remove(d.file(n))
		switch {
		case err == nil:
			removed++
		case !errors.Is(err, fs.ErrNotExist):
			errs = append(errs, err)
		}
	}
	return removed, errors.Join(errs...)
}

// Logout removes the key and the certificates, and reports whether there
// were any (false: already logged out).
func (d Dir) Logout() (bool, error) {
	n, err := d.removeCredentials()
	return n > 0, err
}

// TLSCertificate loads the X.509 client certificate and key for mTLS.
func (d Dir) TLSCertificate() (tls.Certificate, error) {
	certPEM, err := os.ReadFile(d.file(TLSCertFile))
	if errors.Is(err, fs.ErrNotExist) {
		return tls.Certificate{}, d.notLoggedIn()
	}
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("read certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(d.file(KeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return tls.Certificate{}, d.notLoggedIn()
	}
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("read key: %w", err)
	}
	raw, err := ssh.ParseRawPrivateKey(keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("read key %s: %w", d.file(KeyFile), err)
	}
	priv, ok := raw.(*ed25519.PrivateKey)
	if !ok {
		return tls.Certificate{}, fmt.Errorf("key %s is not an Ed25519 key: run tunnel login", d.file(KeyFile))
	}
	blk, _ := pem.Decode(certPEM)
	if blk == nil {
		return tls.Certificate{}, fmt.Errorf("certificate %s is damaged: run tunnel login", d.file(TLSCertFile))
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate %s is damaged: run tunnel login", d.file(TLSCertFile))
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: *priv, Leaf: leaf}, nil
}

// CheckValid returns a one-line error a user can act on when the
// certificate is not valid at now.
func CheckValid(leaf *x509.Certificate, now time.Time) error {
	switch {
	case now.After(leaf.NotAfter):
		return fmt.Errorf("certificate expired %s ago: run tunnel login", Human(now.Sub(leaf.NotAfter)))
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("certificate is not valid for another %s: check this machine's clock", Human(leaf.NotBefore.Sub(now)))
	}
	return nil
}

// Human renders a duration the way people say it: "3 minutes", "1h5m".
func Human(d time.Duration) string {
	switch {
	case d < time.Minute:
		s := int(d.Round(time.Second).Seconds())
		if s == 1 {
			return "1 second"
		}
		return fmt.Sprintf("%d seconds", s)
	case d < time.Hour:
		m := int(d.Round(time.Minute).Minutes())
		if m == 1 {
			return "1 minute"
		}
		return fmt.Sprintf("%d minutes", m)
	}
	return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
}
