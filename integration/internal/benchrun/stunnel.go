package benchrun

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// stunnelPath is Debian's stunnel4: a client-mode instance (plain TCP in,
// TLS out) and a server-mode instance (TLS in, plain TCP to the target),
// TLS 1.3 only, mutual authentication against a throwaway ECDSA P-256 CA.
// The server instance runs on the topology's server side and delivers to
// the targets' local addresses; the client instance runs on the client
// side and listens on its loopback.
type stunnelPath struct {
	e      *env
	topo   *topology
	bin    string
	client *service
	server *service
}

func newStunnelPath(e *env, topo *topology, bin string) *stunnelPath {
	return &stunnelPath{e: e, topo: topo, bin: bin}
}

func (p *stunnelPath) Name() string { return PathStunnel }

func (p *stunnelPath) Setup(ctx context.Context, targets []Target) (map[string]string, error) {
	dir, err := p.e.mkdir("stunnel")
	if err != nil {
		return nil, err
	}
	if err := writeStunnelPKI(dir); err != nil {
		return nil, err
	}
	common := func(role string) []string {
		return []string{
			"foreground = yes",
			"pid =",
			"syslog = no",
			"debug = 4",
			"",
			"sslVersionMin = TLSv1.3",
			"CAfile = " + filepath.Join(dir, "ca.pem"),
			"cert = " + filepath.Join(dir, role+".pem"),
			"key = " + filepath.Join(dir, role+".key"),
			"verifyChain = yes",
		}
	}
	srv := common("server")
	srv = append(srv, "requireCert = yes")
	cli := common("client")
	cli = append(cli, "client = yes", "checkHost = stunnel-server")
	addrs := map[string]string{}
	server, client := p.topo.server, p.topo.client
	for _, t := range targets {
		sp, err := server.freePort()
		if err != nil {
			return nil, err
		}
		cp, err := client.freePort()
		if err != nil {
			return nil, err
		}
		srv = append(srv, "", "["+t.Name+"]", "accept = "+server.addr(sp), "connect = "+t.Addr)
		cli = append(cli, "", "["+t.Name+"]", "accept = "+loopback(cp), "connect = "+server.addr(sp))
		addrs[t.Name] = loopback(cp)
	}
	start := func(role string, on *host, lines []string) (*service, error) {
		conf := filepath.Join(dir, role+".conf")
		if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			return nil, err
		}
		cmd := exec.Command(p.bin, conf)
		cmd.Dir = dir
		return p.e.startServiceOn(on, "stunnel "+role, cmd, filepath.Join(dir, role+".log"))
	}
	if p.server, err = start("server", server, srv); err != nil {
		return nil, err
	}
	if p.client, err = start("client", client, cli); err != nil {
		return nil, err
	}
	for _, t := range targets {
		a := addrs[t.Name]
		if err := waitFor(ctx, 15*time.Second, p.client, func() error {
			if err := p.server.exited(); err != nil {
				return err
			}
			return acceptsTCP(ctx, client, a)
		}); err != nil {
			return nil, fmt.Errorf("stunnel %s listener: %w\nserver log:\n%s\nclient log:\n%s",
				t.Name, err, p.server.tail(), p.client.tail())
		}
	}
	return addrs, nil
}

func (p *stunnelPath) PIDs() []int {
	var pids []int
	for _, s := range []*service{p.client, p.server} {
		if s != nil {
			pids = append(pids, s.pid())
		}
	}
	return pids
}

func (p *stunnelPath) Close() error {
	for _, s := range []*service{p.client, p.server} {
		if s != nil {
			s.stop()
		}
	}
	return nil
}

// writeStunnelPKI writes ca.pem, server.{pem,key} (for "stunnel-server",
// 127.0.0.1) and client.{pem,key} into dir: a throwaway ECDSA P-256 CA.
func writeStunnelPKI(dir string) error {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tunnel-bench throwaway CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, "ca.pem"), "CERTIFICATE", caDER); err != nil {
		return err
	}
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage, dns []string, ips []net.IP) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: "stunnel-" + name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			DNSNames:     dns,
			IPAddresses:  ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		if err := writePEM(filepath.Join(dir, name+".pem"), "CERTIFICATE", der); err != nil {
			return err
		}
		return writePEM(filepath.Join(dir, name+".key"), "PRIVATE KEY", kder)
	}
	if err := leaf("server", 2, x509.ExtKeyUsageServerAuth, []string{"stunnel-server"}, []net.IP{net.IPv4(127, 0, 0, 1)}); err != nil {
		return err
	}
	return leaf("client", 3, x509.ExtKeyUsageClientAuth, []string{"stunnel-client"}, nil)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
