package apiclient

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/identity"
)

func TestRetryable(t *testing.T) {
	for _, tt := range []struct {
		method string
		sent   bool
		status int
		want   bool
	}{
		{http.MethodPost, false, 0, true},   // connect error: the gateway never saw the login
		{http.MethodGet, false, 0, true},    // connect error
		{http.MethodPost, true, 503, true},  // the gateway cannot reach its store
		{http.MethodGet, true, 503, true},   // idem
		{http.MethodGet, true, 0, true},     // sent, no answer: idempotent
		{http.MethodPost, true, 0, false},   // sent, no answer: the TOTP code may be consumed
		{http.MethodDelete, true, 0, false}, // sent, no answer: not repeated
		{http.MethodPost, true, 401, false}, // a refusal is final
		{http.MethodGet, true, 403, false},  // idem
		{http.MethodGet, true, 500, false},  // the gateway answered
		{http.MethodPost, true, 200, false}, // done
	} {
		if got := Retryable(tt.method, tt.sent, tt.status); got != tt.want {
			t.Errorf("Retryable(%s, sent=%v, %d) = %v; want %v", tt.method, tt.sent, tt.status, got, tt.want)
		}
	}
}

// testGateway is an HTTPS server with a certificate of ca for 127.0.0.1
// that counts the requests it sees.
type testGateway struct {
	*httptest.Server
	hits atomic.Int32
}

func startGateway(t *testing.T, ca *certs.Authority, h http.HandlerFunc) *testGateway {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueX509Server(certs.X509Request{ID: identity.ID{Cluster: ca.Cluster(), Kind: identity.Gateway, Name: "gw"},
		PublicKey: pub, TTL: time.Hour, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	g := &testGateway{}
	g.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.hits.Add(1)
		h(w, r)
	}))
	g.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw, ca.X509CA().Raw}, PrivateKey: priv, Leaf: leaf}}}
	g.StartTLS()
	t.Cleanup(g.Close)
	return g
}

func (g *testGateway) addr() string { return strings.TrimPrefix(g.URL, "https://") }

func ok(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(`{"user":"alice"}`)) }

// deadAddr is an address where nothing listens.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func newCA(t *testing.T) *certs.Authority {
	ca, err := certs.Generate(certs.Config{Cluster: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func login(t *testing.T, ca *certs.Authority, gateways ...string) error {
	c, err := New(Config{Gateway: strings.Join(gateways, ","), Pin: ca.Pin(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out api.LoginResponse
	return c.Do(context.Background(), http.MethodPost, api.PathLogin, nil, api.LoginRequest{User: "alice", OTP: "123456"}, &out)
}

// A login goes to the next gateway when the first cannot be reached or
// answers 503, and never after a gateway answered otherwise, nor after it
// took the request without answering (its TOTP code may be spent there).
func TestLoginFailover(t *testing.T) {
	ca := newCA(t)

	live := startGateway(t, ca, ok)
	if err := login(t, ca, deadAddr(t), live.addr()); err != nil || live.hits.Load() != 1 {
		t.Errorf("first gateway down: err = %v, second saw %d requests; want success through the second", err, live.hits.Load())
	}

	live = startGateway(t, ca, ok)
	noStore := startGateway(t, ca, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"code":"internal","error":"the gateway cannot reach its store: connection refused"}`))
	})
	if err := login(t, ca, noStore.addr(), live.addr()); err != nil || noStore.hits.Load() != 1 || live.hits.Load() != 1 {
		t.Errorf("first gateway without its store: err = %v, hits %d, %d; want success through the second", err, noStore.hits.Load(), live.hits.Load())
	}

	live = startGateway(t, ca, ok)
	refusing := startGateway(t, ca, func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"code":"invalid_credentials","error":"wrong password or code"}`))
	})
	err := login(t, ca, refusing.addr(), live.addr())
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Message != "wrong password or code" || live.hits.Load() != 0 {
		t.Errorf("refused by the first: err = %v, second saw %d requests; want the refusal, and nothing sent to the second", err, live.hits.Load())
	}

	live = startGateway(t, ca, ok)
	hangup := startGateway(t, ca, func(w http.ResponseWriter, _ *http.Request) {
		// Took the request, then died before answering.
		panic(http.ErrAbortHandler)
	})
	if err := login(t, ca, hangup.addr(), live.addr()); err == nil || hangup.hits.Load() != 1 || live.hits.Load() != 0 {
		t.Errorf("first took the login and died: err = %v, hits %d, %d; want an error and nothing sent to the second", err, hangup.hits.Load(), live.hits.Load())
	}

	// The same failure on a GET (idempotent) goes to the next one.
	c, err := New(Config{Gateway: hangup.addr() + "," + live.addr(), Pin: ca.Pin(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var out api.LoginResponse
	if err := c.Do(context.Background(), http.MethodGet, api.PathLogin, nil, nil, &out); err != nil || live.hits.Load() != 1 || out.User != "alice" {
		t.Errorf("GET after a hang-up: err = %v, second saw %d; want the answer of the second", err, live.hits.Load())
	}
	// And the client sticks to the gateway that answered.
	if err := c.Do(context.Background(), http.MethodGet, api.PathLogin, nil, nil, &out); err != nil || hangup.hits.Load() != 2 || live.hits.Load() != 2 {
		t.Errorf("next GET: err = %v, hits %d, %d; want it sent straight to the second", err, hangup.hits.Load(), live.hits.Load())
	}

	// The last one down after one without its store: both reasons.
	dead := deadAddr(t)
	err = login(t, ca, noStore.addr(), dead)
	if err == nil || !strings.Contains(err.Error(), "the gateway at "+noStore.addr()+": the gateway cannot reach its store: connection refused") ||
		!strings.Contains(err.Error(), "cannot reach the gateway at "+dead) {
		t.Errorf("no store, then down: err = %v; want both reasons", err)
	}

	// All down: the error names every gateway.
	a, b := deadAddr(t), deadAddr(t)
	err = login(t, ca, a, b)
	if err == nil || !strings.Contains(err.Error(), "cannot reach the gateway at "+a) || !strings.Contains(err.Error(), "cannot reach the gateway at "+b) {
		t.Errorf("all down: err = %v; want both gateways named", err)
	}
}

func TestSplitGateways(t *testing.T) {
	got, err := SplitGateways(" a:1, b:2,,a:1 ")
	if err != nil || strings.Join(got, ",") != "a:1,b:2" {
		t.Errorf("SplitGateways = %v, %v; want [a:1 b:2]", got, err)
	}
	if _, err := SplitGateways("a:1,b"); err == nil || !strings.Contains(err.Error(), `"b" must be HOST:PORT`) {
		t.Errorf("a bad address: err = %v", err)
	}
	if _, err := SplitGateways(" , "); err == nil {
		t.Error("an empty list was accepted")
	}
}
