package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/identity"
)

// adminRequest is a request the fake gateway received.
type adminRequest struct {
	Method, Path string
	Query        string // the raw query; "" for none
	Body         map[string]any
}

// adminTestGateway is a fake admin API on TLS, with a real CA and a
// profile logged in to it, for testing what the admin commands send and
// print. answer gives the status and JSON body of each answer.
type adminTestGateway struct {
	t      *testing.T
	home   string
	mu     sync.Mutex
	got    []adminRequest
	answer func(r adminRequest) (int, any)
}

func newAdminTestGateway(t *testing.T, answer func(r adminRequest) (int, any)) *adminTestGateway {
	t.Helper()
	ca, err := certs.Generate(certs.Config{Cluster: "test"})
	if err != nil {
		t.Fatalf("certs.Generate: %v", err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.IssueX509Server(certs.X509Request{ID: identity.ID{Cluster: "test", Kind: identity.Gateway, Name: "gw"},
		PublicKey: pub, TTL: time.Hour, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatalf("IssueX509Server: %v", err)
	}
	g := &adminTestGateway{t: t, home: t.TempDir(), answer: answer}
	ts := httptest.NewUnstartedServer(http.HandlerFunc(g.serve))
	ts.TLS = &tls.Config{MinVersion: tls.VersionTLS13, ClientAuth: tls.RequireAnyClientCert,
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw, ca.X509CA().Raw}, PrivateKey: priv}}}
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.StartTLS()
	t.Cleanup(ts.Close)

	key, err := profile.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.IssueX509Client(certs.X509Request{ID: identity.ID{Cluster: "test", Kind: identity.User, Name: "boss"},
		PublicKey: key.Private.Public(), TTL: time.Hour})
	if err != nil {
		t.Fatalf("IssueX509Client: %v", err)
	}
	dir := profile.Dir{Path: g.home}
	if err := dir.SaveProfile(profile.Profile{Gateway: ts.Listener.Addr().String(), CAPin: ca.Pin(), Cluster: "test", User: "boss"}); err != nil {
		t.Fatal(err)
	}
	if err := dir.SaveCredentials(profile.Credentials{Key: key, Cluster: "test",
		TLSCertPEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: client.Raw})),
		CAPEM:      string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.X509CA().Raw}))}); err != nil {
		t.Fatal(err)
	}
	return g
}

func (g *adminTestGateway) serve(w http.ResponseWriter, r *http.Request) {
	req := adminRequest{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery}
	if b, _ := io.ReadAll(r.Body); len(b) > 0 {
		if err := json.Unmarshal(b, &req.Body); err != nil {
			g.t.Errorf("%s %s: body %q is not a JSON object: %v", r.Method, r.URL.Path, b, err)
		}
	}
	g.mu.Lock()
	g.got = append(g.got, req)
	answer := g.answer
	g.mu.Unlock()
	status, body := answer(req)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

// setAnswer replaces the answer function.
func (g *adminTestGateway) setAnswer(answer func(r adminRequest) (int, any)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.answer = answer
}

// requests returns what the gateway received.
func (g *adminTestGateway) requests() []adminRequest {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]adminRequest(nil), g.got...)
}

// run runs the CLI logged in to g.
func (g *adminTestGateway) run(args ...string) (string, error) {
	g.t.Helper()
	g.t.Setenv("TUNNEL_HOME", g.home)
	var out bytes.Buffer
	env := Env{Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }, Now: time.Now}
	err := Run(context.Background(), args, env)
	return out.String(), err
}

func TestRolesUpdate(t *testing.T) {
	role := api.Role{Name: "dev", Logins: []string{"deploy", "ubuntu"}, Services: []string{"db-1/postgres"},
		MaxTTL: api.Duration(2 * time.Hour), PortForwarding: true}
	g := newAdminTestGateway(t, func(adminRequest) (int, any) { return 200, role })

	tests := []struct {
		name string
		args []string
		body map[string]any // what the command sends: only the flags given
	}{
		{"logins", []string{"--login", "ubuntu", "--login", "deploy"},
			map[string]any{"logins": []any{"ubuntu", "deploy"}}},
		{"logins as a list", []string{"--login", "ubuntu,deploy"},
			map[string]any{"logins": []any{"ubuntu", "deploy"}}},
		{"nodes cleared", []string{"--node", ""}, map[string]any{"nodes": []any{}}},
		{"services and max TTL", []string{"--service", "db-1/postgres", "--service", "db-*/mysql", "--max-ttl", "2h"},
			map[string]any{"services": []any{"db-1/postgres", "db-*/mysql"}, "max_ttl": "2h0m0s"}},
		{"max TTL back to the cluster maximum", []string{"--max-ttl", "0"}, map[string]any{"max_ttl": "0s"}},
		{"admin taken away", []string{"--admin=false"}, map[string]any{"admin": false}},
		{"admin granted", []string{"--admin"}, map[string]any{"admin": true}},
		{"forwarding", []string{"--allow-port-forwarding", "--allow-agent-forwarding=false"},
			map[string]any{"port_forwarding": true, "agent_forwarding": false}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := g.run(append([]string{"admin", "roles", "update", "dev"}, tc.args...)...)
			if err != nil {
				t.Fatalf("roles update: %v\n%s", err, out)
			}
			reqs := g.requests()
			if len(reqs) != i+1 {
				t.Fatalf("the gateway got %d requests; want %d", len(reqs), i+1)
			}
			want := adminRequest{Method: "PATCH", Path: "/v1/admin/roles/dev", Body: tc.body}
			if diff := cmp.Diff(want, reqs[i]); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
			for _, w := range []string{"Updated role dev", "next login", "deploy, ubuntu", "db-1/postgres", "2h0m0s"} {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}

	out, err := g.run("admin", "roles", "update", "dev", "--admin", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var got api.Role
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("--json printed %q: %v", out, err)
	}
	if diff := cmp.Diff(role, got); diff != "" {
		t.Errorf("--json (-want +got):\n%s", diff)
	}

	// Refused before asking the gateway.
	n := len(g.requests())
	if _, err := g.run("admin", "roles", "update", "dev"); err == nil || !strings.Contains(err.Error(), "nothing to change") {
		t.Errorf("update without flags: got %v; want nothing to change", err)
	}
	if _, err := g.run("admin", "roles", "update", "dev", "ops", "--admin"); err == nil || !strings.Contains(err.Error(), "takes NAME (got 2 arguments)") {
		t.Errorf("update with two names: got %v", err)
	}
	for _, cmd := range [][]string{{"admin", "roles", "update", "dev", "--max-ttl", "-5h"}, {"admin", "roles", "add", "neg", "--max-ttl", "-5h"}} {
		if _, err := g.run(cmd...); err == nil || err.Error() != "--max-ttl -5h0m0s is negative: give a length such as 8h (0: the cluster maximum)" {
			t.Errorf("%s: got %v; want the negative length refused", strings.Join(cmd, " "), err)
		}
	}
	if len(g.requests()) != n {
		t.Errorf("refused commands reached the gateway")
	}

	// The gateway's refusal is shown as it is.
	g.setAnswer(func(adminRequest) (int, any) {
		return 404, api.Error{Code: api.CodeNotFound, Message: "update role nosuch: role nosuch: not found"}
	})
	if _, err := g.run("admin", "roles", "update", "nosuch", "--admin"); err == nil || err.Error() != "update role nosuch: role nosuch: not found" {
		t.Errorf("update of an unknown role: got %v", err)
	}
}

func TestRolesUpdateHelp(t *testing.T) {
	out, err := run(t, "admin", "roles", "update", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"--login", "--node", "--service", "--max-ttl", "--admin", "--allow-port-forwarding",
		"--allow-agent-forwarding", "--json", "Only the flags given", `--node ""`, "next login"} {
		if !strings.Contains(out, w) {
			t.Errorf("help lacks %q:\n%s", w, out)
		}
	}
	out, err = run(t, "admin", "roles", "--help")
	if err != nil || !strings.Contains(out, "update") {
		t.Errorf("roles --help lists no update: %v\n%s", err, out)
	}
}

// sessions revoke says what it revoked besides the session: for a session
// through the jump host, the user's login certificate.
func TestSessionsRevokeSaysWhatIsRevoked(t *testing.T) {
	s := api.Session{ID: "s1", User: "bob", Node: "web-1", Login: "ubuntu", State: "revoked"}
	g := newAdminTestGateway(t, func(adminRequest) (int, any) { return 200, s })
	out, err := g.run("admin", "sessions", "revoke", "s1")
	want := "Revoked session s1 (ubuntu@web-1 of bob), and the SSH certificate it was opened with (through the jump host: bob's login certificate, until they log in again).\n"
	if err != nil || out != want {
		t.Errorf("sessions revoke: %q, %v; want %q", out, err, want)
	}
}
