package servercert

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/identity"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var start = time.Date(2030, time.March, 4, 5, 6, 7, 0, time.UTC)

// switchReader reads from crypto/rand until failing is set.
type switchReader struct{ failing atomic.Bool }

func (r *switchReader) Read(p []byte) (int, error) {
	if r.failing.Load() {
		return 0, errors.New("entropy source broken")
	}
	return rand.Read(p)
}

func newCA(t *testing.T, clock *fakeClock, r io.Reader) *certs.Authority {
	t.Helper()
	ca, err := certs.Generate(certs.Config{Cluster: "prod", Clock: clock.Now, Rand: r})
	if err != nil {
		t.Fatalf("certs.Generate: %v", err)
	}
	return ca
}

func serialOf(t *testing.T, c *tls.Certificate) string {
	t.Helper()
	if c == nil || c.Leaf == nil {
		t.Fatalf("got certificate %v; want one with a leaf", c)
	}
	return c.Leaf.SerialNumber.String()
}

func TestFromCA(t *testing.T) {
	clock := &fakeClock{t: start}
	ca := newCA(t, clock, nil)
	const ttl = 3 * time.Hour
	src, err := FromCA(ca, "gw1", []string{"gw.example.com", "127.0.0.1", "::1"}, ttl, clock.Now)
	if err != nil {
		t.Fatalf("FromCA: %v", err)
	}
	first, err := src.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf := first.Leaf
	if got, want := leaf.NotAfter, start.Add(ttl); !got.Equal(want) {
		t.Errorf("got NotAfter %v; want %v", got, want)
	}
	if len(first.Certificate) != 2 || !bytes.Equal(first.Certificate[1], ca.X509CA().Raw) {
		t.Errorf("chain does not end with the cluster CA certificate")
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != (identity.ID{Cluster: "prod", Kind: identity.Gateway, Name: "gw1"}).String() {
		t.Errorf("got URIs %v; want the gateway identity", leaf.URIs)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "gw.example.com" || len(leaf.IPAddresses) != 2 {
		t.Errorf("got DNS %v IPs %v; want gw.example.com and two IPs", leaf.DNSNames, leaf.IPAddresses)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.X509Pool(), DNSName: "gw.example.com", CurrentTime: start}); err != nil {
		t.Errorf("leaf does not verify for gw.example.com: %v", err)
	}
	if src.Leaf() != leaf {
		t.Errorf("Leaf() is not the served leaf")
	}

	// The certificate's life runs from NotBefore (backdated by the clock
	// skew) to NotAfter; it is renewed once two thirds of it have passed.
	renewAt := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3)
	clock.Advance(renewAt.Sub(start) - time.Second)
	c, err := src.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if serialOf(t, c) != serialOf(t, first) {
		t.Errorf("renewed before two thirds of the life")
	}

	clock.Advance(2 * time.Second)
	renewed, err := src.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if serialOf(t, renewed) == serialOf(t, first) {
		t.Fatalf("not renewed after two thirds of the life: same serial %s", serialOf(t, first))
	}
	if !renewed.Leaf.NotAfter.Equal(clock.Now().Add(ttl)) {
		t.Errorf("renewed NotAfter %v; want %v", renewed.Leaf.NotAfter, clock.Now().Add(ttl))
	}
	if bytes.Equal(renewed.Leaf.RawSubjectPublicKeyInfo, leaf.RawSubjectPublicKeyInfo) {
		t.Errorf("renewal kept the old key; want a new one")
	}
	if src.Leaf() != renewed.Leaf {
		t.Errorf("Leaf() is not the renewed leaf")
	}
	again, err := src.GetCertificate(nil)
	if err != nil || again != renewed {
		t.Errorf("a handshake after renewal got another certificate (%v)", err)
	}
}

func TestFromCADefaultTTL(t *testing.T) {
	clock := &fakeClock{t: start}
	ca := newCA(t, clock, nil)
	src, err := FromCA(ca, "gw1", []string{"localhost"}, 0, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := src.Leaf().NotAfter, start.Add(ca.MaxTTL()); !got.Equal(want) {
		t.Errorf("got NotAfter %v; want the cluster maximum, %v", got, want)
	}
	if _, err := FromCA(ca, "gw1", nil, 0, clock.Now); err == nil {
		t.Errorf("FromCA without names: got no error")
	}
	if _, err := FromCA(ca, "gw1", []string{"bad name!"}, 0, clock.Now); err == nil {
		t.Errorf("FromCA with an invalid DNS name: got no error")
	}
}

func TestFromCARenewalConcurrent(t *testing.T) {
	clock := &fakeClock{t: start}
	ca := newCA(t, clock, nil)
	src, err := FromCA(ca, "gw1", []string{"localhost"}, time.Hour, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	old := src.Leaf().SerialNumber.String()
	clock.Advance(50 * time.Minute)
	const n = 16
	serials := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c, err := src.GetCertificate(nil)
			if err != nil {
				t.Error(err)
				return
			}
			serials[i] = c.Leaf.SerialNumber.String()
		})
	}
	wg.Wait()
	for i, s := range serials {
		if s == old || s != serials[0] {
			t.Errorf("handshake %d got serial %s; want one renewed certificate for all (old %s, first %s)", i, s, old, serials[0])
		}
	}
}

func TestFromCARenewalFailure(t *testing.T) {
	clock := &fakeClock{t: start}
	r := &switchReader{}
	ca := newCA(t, clock, r)
	src, err := FromCA(ca, "gw1", []string{"localhost"}, time.Hour, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	old := src.Leaf()
	r.failing.Store(true)

	// Past two thirds but still valid: the old certificate is served.
	clock.Advance(50 * time.Minute)
	c, err := src.GetCertificate(nil)
	if err != nil {
		t.Fatalf("renewal failed while the old certificate is valid: got %v; want the old certificate", err)
	}
	if c.Leaf != old {
		t.Errorf("got another certificate; want the old one")
	}

	// Once it has expired, the error shows.
	clock.Advance(11 * time.Minute)
	if c, err := src.GetCertificate(nil); err == nil {
		t.Errorf("got certificate (NotAfter %v) after expiry with renewal failing; want an error", c.Leaf.NotAfter)
	}

	// When the CA works again, renewal happens on the next handshake.
	r.failing.Store(false)
	c, err = src.GetCertificate(nil)
	if err != nil {
		t.Fatalf("after the CA recovered: %v", err)
	}
	if c.Leaf == old || !c.Leaf.NotAfter.After(clock.Now()) {
		t.Errorf("got NotAfter %v; want a new, valid certificate", c.Leaf.NotAfter)
	}
}

// pair is a certificate and key as PEM files.
type pair struct {
	certPEM, keyPEM []byte
	serial          string
}

func newPair(t *testing.T, ca *certs.Authority) pair {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.IssueX509Server(certs.X509Request{
		ID:        identity.ID{Cluster: ca.Cluster(), Kind: identity.Gateway, Name: "gw1"},
		PublicKey: pub, TTL: time.Hour, DNSNames: []string{"gw.example.com"},
	})
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return pair{
		certPEM: append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}),
			pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.X509CA().Raw})...),
		keyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		serial: c.SerialNumber.String(),
	}
}

// files writes certificate and key files with a modification time that
// differs from any before, so that a change is seen on every file system.
type files struct {
	t                 *testing.T
	certPath, keyPath string
	mtime             time.Time
}

func (f *files) write(certPEM, keyPEM []byte) {
	f.t.Helper()
	f.mtime = f.mtime.Add(time.Second)
	for _, w := range []struct {
		path string
		data []byte
	}{{f.certPath, certPEM}, {f.keyPath, keyPEM}} {
		if w.data == nil {
			continue
		}
		if err := os.WriteFile(w.path, w.data, 0o600); err != nil {
			f.t.Fatal(err)
		}
		if err := os.Chtimes(w.path, f.mtime, f.mtime); err != nil {
			f.t.Fatal(err)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func TestFromFiles(t *testing.T) {
	clock := &fakeClock{t: start}
	ca := newCA(t, clock, nil)
	dir := t.TempDir()
	fs := &files{t: t, certPath: filepath.Join(dir, "tls.crt"), keyPath: filepath.Join(dir, "tls.key"), mtime: start}
	p1, p2, p3 := newPair(t, ca), newPair(t, ca), newPair(t, ca)
	fs.write(p1.certPEM, p1.keyPEM)

	var logs syncBuffer
	src, err := FromFiles(fs.certPath, fs.keyPath, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatalf("FromFiles: %v", err)
	}
	src.clock = clock.Now
	get := func() string {
		t.Helper()
		c, err := src.GetCertificate(nil)
		if err != nil {
			t.Fatalf("GetCertificate: %v", err)
		}
		if c.Leaf == nil {
			t.Fatalf("served certificate has no Leaf")
		}
		return c.Leaf.SerialNumber.String()
	}
	if got := get(); got != p1.serial {
		t.Fatalf("got serial %s; want the first pair's %s", got, p1.serial)
	}

	steps := []struct {
		name       string
		cert, key  []byte // nil: left as is
		remove     bool   // remove both files instead
		advance    time.Duration
		wantSerial string
		wantLog    string
	}{
		{name: "changed files, checked within the second", cert: p2.certPEM, key: p2.keyPEM, advance: 500 * time.Millisecond, wantSerial: p1.serial},
		{name: "a second later they are loaded", advance: 500 * time.Millisecond, wantSerial: p2.serial, wantLog: "reloaded"},
		{name: "broken certificate keeps the old one", cert: []byte("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n"), advance: time.Second, wantSerial: p2.serial, wantLog: "still serving the previous one"},
		{name: "broken files are not retried", advance: time.Second, wantSerial: p2.serial},
		{name: "new certificate with the old key keeps the old one", cert: p3.certPEM, advance: time.Second, wantSerial: p2.serial, wantLog: "still serving the previous one"},
		{name: "then the new key arrives", key: p3.keyPEM, advance: time.Second, wantSerial: p3.serial, wantLog: "reloaded"},
		{name: "empty key keeps the old one", key: []byte{}, advance: time.Second, wantSerial: p3.serial, wantLog: "still serving the previous one"},
		{name: "files removed keeps the old one", remove: true, advance: time.Second, wantSerial: p3.serial},
		{name: "files back", cert: p1.certPEM, key: p1.keyPEM, advance: time.Second, wantSerial: p1.serial, wantLog: "reloaded"},
	}
	for _, st := range steps {
		before := len(logs.String())
		if st.remove {
			os.Remove(fs.certPath)
			os.Remove(fs.keyPath)
		} else if st.cert != nil || st.key != nil {
			fs.write(st.cert, st.key)
		}
		clock.Advance(st.advance)
		if got := get(); got != st.wantSerial {
			t.Errorf("%s: got serial %s; want %s", st.name, got, st.wantSerial)
		}
		newLogs := logs.String()[before:]
		if st.wantLog != "" && !strings.Contains(newLogs, st.wantLog) {
			t.Errorf("%s: got logs %q; want %q", st.name, newLogs, st.wantLog)
		}
		if st.wantLog == "" && newLogs != "" {
			t.Errorf("%s: got logs %q; want none", st.name, newLogs)
		}
	}
}

func TestFromFilesRefuses(t *testing.T) {
	clock := &fakeClock{t: start}
	ca := newCA(t, clock, nil)
	p1, p2 := newPair(t, ca), newPair(t, ca)
	tests := []struct {
		name      string
		cert, key []byte // nil: no file
	}{
		{"no certificate file", nil, p1.keyPEM},
		{"no key file", p1.certPEM, nil},
		{"mismatched key", p1.certPEM, p2.keyPEM},
		{"garbage certificate", []byte("garbage"), p1.keyPEM},
		{"key in the certificate file", p1.keyPEM, p1.keyPEM},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			certPath, keyPath := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
			for _, w := range []struct {
				path string
				data []byte
			}{{certPath, tc.cert}, {keyPath, tc.key}} {
				if w.data != nil {
					if err := os.WriteFile(w.path, w.data, 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			if src, err := FromFiles(certPath, keyPath, nil); err == nil {
				t.Errorf("got a source %v; want an error", src)
			}
		})
	}
}
