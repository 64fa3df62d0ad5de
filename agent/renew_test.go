package agent

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/identity"
)

// renewGateway is an HTTPS server of ca that answers renewals with the
// trust bundle labelled with epochs[i] for its i-th answer (the last one
// after that).
type renewGateway struct {
	*httptest.Server
	calls atomic.Int32
}

func startRenewGateway(t *testing.T, ca *certs.Authority, epochs ...uint64) *renewGateway {
	t.Helper()
	g := &renewGateway{}
	g.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != api.PathRenew {
			http.NotFound(w, r)
			return
		}
		n := int(g.calls.Add(1))
		var req api.RenewRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		blk, _ := pem.Decode([]byte(req.CSR))
		csr, err := x509.ParseCertificateRequest(blk.Bytes)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		c, err := ca.IssueX509Client(certs.X509Request{ID: identity.ID{Cluster: ca.Cluster(), Kind: identity.Agent, Name: "db-1"},
			PublicKey: csr.PublicKey, TTL: time.Hour})
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		hostKey, _, _, _, err := ssh.ParseAuthorizedKey([]byte(req.SSHHostKey))
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		hc, err := ca.IssueSSHHost(certs.SSHHostRequest{Host: "db-1", Principals: []string{"db-1"}, PublicKey: hostKey})
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		epoch := epochs[min(n, len(epochs))-1]
		resp := api.AgentIdentity{Agent: "db-1", NotAfter: c.NotAfter,
			X509Certificate:    string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})),
			SSHHostCertificate: string(ssh.MarshalAuthorizedKey(hc)),
			CA: api.CA{Cluster: ca.Cluster(), Pin: ca.Pin(), X509: caPEM(ca), Epoch: epoch,
				SSHUserCAs: caLines(ca.SSHUserCA()), SSHHostCAs: caLines(ca.SSHHostCA())}}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
	}))
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueX509Server(certs.X509Request{ID: identity.ID{Cluster: ca.Cluster(), Kind: identity.Gateway, Name: "gw"},
		PublicKey: pub, TTL: time.Hour, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	g.TLS = &tls.Config{MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw, ca.X509CA().Raw}, PrivateKey: priv, Leaf: leaf}}}
	g.StartTLS()
	t.Cleanup(g.Close)
	return g
}

// renewingAgent is testAgent with what renew needs: an SSH host key, a
// data directory, and a trust bundle of epoch held.
func renewingAgent(t *testing.T, ca *certs.Authority, g *renewGateway, held uint64) (*Agent, *syncBuffer) {
	t.Helper()
	a, logs := testAgent(t, ca, strings.TrimPrefix(g.URL, "https://"))
	_, hk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if a.id.HostKey, err = x509.MarshalPKCS8PrivateKey(hk); err != nil {
		t.Fatal(err)
	}
	a.id.CAPEM, a.id.TrustEpoch = caPEM(ca), held
	if a.store, err = openIdentityStore(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	a.cfg.File = &FileConfig{}
	return a, logs
}

// TestRenewalWithAnOlderTrustBundle: a renewal answered with a trust
// bundle older than the one in force (a gateway that had not reloaded a
// rotation's step yet) is asked again, and the newer answer taken; one
// that stays older gives the agent its certificate but leaves the bundle
// in force when that bundle anchors the certificate; when it does not (a
// store restored from a backup of older keys) the answer's bundle is
// taken, with a warning, so the agent never stops renewing.
func TestRenewalWithAnOlderTrustBundle(t *testing.T) {
	defer func(d time.Duration) { staleRenewalWait = d }(staleRenewalWait)
	staleRenewalWait = 10 * time.Millisecond
	ca := newCA(t, "prod")

	g := startRenewGateway(t, ca, 4, 6)
	a, _ := renewingAgent(t, ca, g, 5)
	if err := a.renew(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := g.calls.Load(); n != 2 || a.identity().TrustEpoch != 6 {
		t.Fatalf("after an older answer then a newer one: %d renewal calls, trust epoch %d; want 2 calls and epoch 6", n, a.identity().TrustEpoch)
	}

	g = startRenewGateway(t, ca, 2)
	a, _ = renewingAgent(t, ca, g, 5)
	old := a.cert.Load().Leaf.SerialNumber
	if err := a.renew(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := g.calls.Load(); n != staleRenewalTries || a.identity().TrustEpoch != 5 || a.cert.Load().Leaf.SerialNumber.Cmp(old) == 0 {
		t.Fatalf("with a gateway that stays older: %d renewal calls, trust epoch %d; want %d calls, the new certificate and the held bundle (epoch 5)",
			n, a.identity().TrustEpoch, staleRenewalTries)
	}

	// The bundle in force is of another CA than the one that signs now.
	g = startRenewGateway(t, ca, 2)
	a, logs := renewingAgent(t, ca, g, 5)
	a.id.CAPEM = caPEM(newCA(t, "prod"))
	if err := a.renew(t.Context()); err != nil {
		t.Fatal(err)
	}
	if a.identity().TrustEpoch != 2 || a.identity().CAPEM != caPEM(ca) {
		t.Fatalf("with a held bundle that does not anchor the new certificate: trust epoch %d; want the answer's bundle (epoch 2)", a.identity().TrustEpoch)
	}
	if !strings.Contains(logs.String(), "restored from a backup") {
		t.Errorf("taking an older bundle logged no warning:\n%s", logs.String())
	}
}
