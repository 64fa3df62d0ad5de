package dbauth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tunnelhq/tunnel/pkg/wire"
)

// fakeServer is a PostgreSQL server made of pgproto3 for these tests: it
// offers TLS (if tlsConf is set), asks for the password in clear (inside
// TLS) and accepts only user/password, reports a few parameters and a
// cancel key, then echoes each Query back as a CommandComplete tag.
type fakeServer struct {
	ln       net.Listener
	tlsConf  *tls.Config
	user     string
	password string

	mu       sync.Mutex
	startups []map[string]string
	sawTLS   []bool
	cancels  []*pgproto3.CancelRequest
	wg       sync.WaitGroup
}

func startFake(t *testing.T, withTLS bool) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{ln: ln, user: "v-token-orders-1", password: "A1a-secret"}
	if withTLS {
		s.tlsConf = selfSigned(t)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); s.wg.Wait() })
	return s
}

func (s *fakeServer) serve(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	var conn net.Conn = c
	tlsOn := false
	for {
		msg, err := ReadStartup(conn)
		if err != nil {
			return
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest:
			if s.tlsConf == nil {
				_, _ = conn.Write([]byte{'N'})
				continue
			}
			_, _ = conn.Write([]byte{'S'})
			tc := tls.Server(conn, s.tlsConf)
			if tc.Handshake() != nil {
				return
			}
			conn, tlsOn = tc, true
			continue
		case *pgproto3.CancelRequest:
			s.mu.Lock()
			s.cancels = append(s.cancels, m)
			s.mu.Unlock()
			return
		case *pgproto3.StartupMessage:
			s.mu.Lock()
			p := map[string]string{}
			for k, v := range m.Parameters {
				p[k] = v
			}
			s.startups = append(s.startups, p)
			s.sawTLS = append(s.sawTLS, tlsOn)
			s.mu.Unlock()
			be := pgproto3.NewBackend(conn, conn)
			be.Send(&pgproto3.AuthenticationCleartextPassword{})
			if be.Flush() != nil {
				return
			}
			if err := be.SetAuthType(pgproto3.AuthTypeCleartextPassword); err != nil {
				return
			}
			pm, err := be.Receive()
			pw, ok := pm.(*pgproto3.PasswordMessage)
			if err != nil || !ok {
				return
			}
			if m.Parameters["user"] != s.user || pw.Password != s.password {
				be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: `password authentication failed for user "` + m.Parameters["user"] + `"`})
				_ = be.Flush()
				return
			}
			be.Send(&pgproto3.AuthenticationOk{})
			be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "15.99"})
			be.Send(&pgproto3.ParameterStatus{Name: "application_name", Value: m.Parameters["application_name"]})
			be.Send(&pgproto3.BackendKeyData{ProcessID: 4242, SecretKey: []byte{1, 2, 3, 4}})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			if be.Flush() != nil {
				return
			}
			for {
				fm, err := be.Receive()
				if err != nil {
					return
				}
				switch q := fm.(type) {
				case *pgproto3.Query:
					be.Send(&pgproto3.CommandComplete{CommandTag: []byte("ECHO " + q.String)})
					be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
					if be.Flush() != nil {
						return
					}
				case *pgproto3.Terminate:
					return
				}
			}
		}
	}
}

func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "db"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// app is the application's side: it writes its startup and reads what
// the agent answers.
type app struct {
	conn  net.Conn // the application's end
	agent net.Conn // the agent's end (the stream)
	fe    *pgproto3.Frontend
}

// pipeApp connects an application to Serve over a socket pair and returns
// both ends' results.
func serveApp(t *testing.T, p *Postgres, cred Credential, params map[string]string, prelude ...pgproto3.FrontendMessage) (*app, chan error, chan net.Conn) {
	t.Helper()
	agentSide, appSide := net.Pipe()
	t.Cleanup(func() { agentSide.Close(); appSide.Close() })
	errc, connc := make(chan error, 1), make(chan net.Conn, 1)
	go func() {
		c, err := p.Serve(context.Background(), agentSide, cred)
		errc <- err
		connc <- c
		if c == nil {
			agentSide.Close()
		}
	}()
	a := &app{conn: appSide, agent: agentSide, fe: pgproto3.NewFrontend(appSide, appSide)}
	for _, m := range prelude {
		a.fe.Send(m)
		if err := a.fe.Flush(); err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		if _, err := io.ReadFull(appSide, b[:]); err != nil || b[0] != 'N' {
			t.Fatalf("answer to %T: %q, %v; want N", m, b, err)
		}
	}
	a.fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: params})
	if err := a.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	return a, errc, connc
}

// TestPostgresLogsInForTheApp: the application gives any user and no
// password, declines nothing but gets 'N' to SSL and GSS encryption
// requests; the agent logs in to the server over TLS with the leased
// credential, the application's database and settings, and the
// application sees the server's parameters, cancel key and
// ReadyForQuery, then talks to the server itself.
func TestPostgresLogsInForTheApp(t *testing.T) {
	srv := startFake(t, true)
	p := &Postgres{Addr: srv.ln.Addr().String()}
	a, errc, connc := serveApp(t, p, Credential{User: srv.user, Password: wire.Secret(srv.password)},
		map[string]string{"user": "whoever", "database": "orders", "application_name": "orders-api"},
		&pgproto3.SSLRequest{}, &pgproto3.GSSEncRequest{})
	var got []string
	for {
		m, err := a.fe.Receive()
		if err != nil {
			t.Fatalf("receive: %v (Serve: %v)", err, <-errc)
		}
		switch m := m.(type) {
		case *pgproto3.AuthenticationOk:
			got = append(got, "auth ok")
		case *pgproto3.ParameterStatus:
			got = append(got, m.Name+"="+m.Value)
		case *pgproto3.BackendKeyData:
			if m.ProcessID != 4242 || !bytes.Equal(m.SecretKey, []byte{1, 2, 3, 4}) {
				t.Errorf("cancel key %d %x; want the server's", m.ProcessID, m.SecretKey)
			}
			got = append(got, "key")
		case *pgproto3.ReadyForQuery:
			got = append(got, "ready")
		default:
			t.Fatalf("unexpected %T", m)
		}
		if got[len(got)-1] == "ready" {
			break
		}
	}
	if want := "auth ok,application_name=orders-api,server_version=15.99,key,ready"; strings.Join(got, ",") != want {
		t.Errorf("the application saw %s; want %s", strings.Join(got, ","), want)
	}
	if err := <-errc; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	server := <-connc
	defer server.Close()
	if _, ok := server.(*tls.Conn); !ok {
		t.Errorf("the server connection is %T; want TLS, which the server offered", server)
	}
	srv.mu.Lock()
	st, sawTLS := srv.startups[len(srv.startups)-1], srv.sawTLS[len(srv.sawTLS)-1]
	srv.mu.Unlock()
	if st["user"] != srv.user || st["database"] != "orders" || st["application_name"] != "orders-api" || !sawTLS {
		t.Errorf("the server got startup %v (TLS %v); want the leased user, the app's database and settings, over TLS", st, sawTLS)
	}
	// The session passes through: the application's query reaches the
	// server and its answer comes back.
	done := make(chan struct{})
	go func() {
		defer close(done)
		go func() { _, _ = io.Copy(server, a.agent) }()
		_, _ = io.Copy(a.agent, server)
	}()
	a.fe.Send(&pgproto3.Query{String: "SELECT 1"})
	if err := a.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	m, err := a.fe.Receive()
	if cc, ok := m.(*pgproto3.CommandComplete); err != nil || !ok || string(cc.CommandTag) != "ECHO SELECT 1" {
		t.Fatalf("answer %#v, %v; want the server's echo", m, err)
	}
	a.conn.Close()
	a.agent.Close()
	server.Close()
	<-done
}

// TestPostgresPlainServer: a server that declines TLS gets the login in
// the clear (sslmode=prefer).
func TestPostgresPlainServer(t *testing.T) {
	srv := startFake(t, false)
	p := &Postgres{Addr: srv.ln.Addr().String()}
	a, errc, connc := serveApp(t, p, Credential{User: srv.user, Password: wire.Secret(srv.password)}, map[string]string{"user": "app"})
	if m, err := a.fe.Receive(); err != nil {
		t.Fatalf("receive: %v", err)
	} else if _, ok := m.(*pgproto3.AuthenticationOk); !ok {
		t.Fatalf("first message %T; want AuthenticationOk", m)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	c := <-connc
	defer c.Close()
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if st := srv.startups[len(srv.startups)-1]; st["database"] != "app" {
		t.Errorf("database %q; want the user name the app gave, as PostgreSQL does", st["database"])
	}
}

// TestPostgresLoginRefused: a credential the server refuses (revoked)
// reaches the application as a FATAL error in its protocol, saying that
// the agent's login failed and why; the password is not in it.
func TestPostgresLoginRefused(t *testing.T) {
	srv := startFake(t, true)
	p := &Postgres{Addr: srv.ln.Addr().String()}
	a, errc, _ := serveApp(t, p, Credential{User: srv.user, Password: "wrong-password"}, map[string]string{"user": "app"})
	m, err := a.fe.Receive()
	er, ok := m.(*pgproto3.ErrorResponse)
	if err != nil || !ok {
		t.Fatalf("got %T, %v; want an ErrorResponse", m, err)
	}
	if er.Severity != "FATAL" || er.Code != "28P01" || !strings.Contains(er.Message, "the tunnel agent could not log in to the database with the credential Vault issued: password authentication failed") {
		t.Errorf("error %s %s %q", er.Severity, er.Code, er.Message)
	}
	serr := <-errc
	if serr == nil || strings.Contains(serr.Error(), "wrong-password") || strings.Contains(er.Message, "wrong-password") {
		t.Errorf("Serve = %v; want an error without the password", serr)
	}
}

// TestPostgresUnreachable: a server that is down is told to the
// application.
func TestPostgresUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	a, errc, _ := serveApp(t, &Postgres{Addr: addr}, Credential{User: "u", Password: "p"}, map[string]string{"user": "app"})
	m, err := a.fe.Receive()
	er, ok := m.(*pgproto3.ErrorResponse)
	if err != nil || !ok || er.Code != "08006" || !strings.Contains(er.Message, "the tunnel agent could not log in to the database") {
		t.Fatalf("got %#v, %v; want a connection failure", m, err)
	}
	if <-errc == nil {
		t.Error("Serve succeeded")
	}
}

// TestPostgresCancel: a cancel request is passed to the server as is.
func TestPostgresCancel(t *testing.T) {
	srv := startFake(t, false)
	agentSide, appSide := net.Pipe()
	defer appSide.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := (&Postgres{Addr: srv.ln.Addr().String()}).Serve(context.Background(), agentSide, Credential{User: "u", Password: "p"})
		agentSide.Close()
		errc <- err
	}()
	fe := pgproto3.NewFrontend(appSide, appSide)
	fe.Send(&pgproto3.CancelRequest{ProcessID: 4242, SecretKey: []byte{1, 2, 3, 4}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrCancel) {
		t.Fatalf("Serve = %v; want ErrCancel", err)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.cancels) != 1 || srv.cancels[0].ProcessID != 4242 || !bytes.Equal(srv.cancels[0].SecretKey, []byte{1, 2, 3, 4}) {
		t.Errorf("the server got cancels %+v", srv.cancels)
	}
}

// TestPostgresRefusesReplication: a replication connection is refused.
func TestPostgresRefusesReplication(t *testing.T) {
	srv := startFake(t, false)
	a, errc, _ := serveApp(t, &Postgres{Addr: srv.ln.Addr().String()}, Credential{User: "u", Password: "p"},
		map[string]string{"user": "app", "replication": "database"})
	m, err := a.fe.Receive()
	if er, ok := m.(*pgproto3.ErrorResponse); err != nil || !ok || !strings.Contains(er.Message, "replication connections are not passed") {
		t.Fatalf("got %#v, %v", m, err)
	}
	if <-errc == nil {
		t.Error("Serve succeeded")
	}
}

// TestReadStartupBounds: a length that is not PostgreSQL's is refused
// without reading on, and no byte past the packet is read.
func TestReadStartupBounds(t *testing.T) {
	for _, b := range [][]byte{{0, 0, 0, 3}, {0, 1, 0, 0, 0, 3, 0, 0}, {0x7f, 0xff, 0xff, 0xff}} {
		if _, err := ReadStartup(bytes.NewReader(b)); err == nil {
			t.Errorf("ReadStartup(%x) succeeded", b)
		}
	}
	sm, _ := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "a"}}).Encode(nil)
	r := bytes.NewReader(append(sm, "rest"...))
	if _, err := ReadStartup(r); err != nil {
		t.Fatal(err)
	}
	if rest, _ := io.ReadAll(r); string(rest) != "rest" {
		t.Errorf("ReadStartup read past its packet: %q left", rest)
	}
}

// FuzzReadStartup: hostile bytes from the application never panic, and
// what is accepted is one of the four startup messages, read to its end
// and no further.
func FuzzReadStartup(f *testing.F) {
	for _, m := range []pgproto3.FrontendMessage{
		&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "a", "database": "b"}},
		&pgproto3.SSLRequest{}, &pgproto3.GSSEncRequest{}, &pgproto3.CancelRequest{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}},
	} {
		b, err := m.Encode(nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0, 0, 0, 8, 0, 3, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		msg, err := ReadStartup(r)
		if err != nil {
			return
		}
		switch msg.(type) {
		case *pgproto3.StartupMessage, *pgproto3.SSLRequest, *pgproto3.GSSEncRequest, *pgproto3.CancelRequest:
		default:
			t.Fatalf("ReadStartup returned %T", msg)
		}
		if n := len(b) - r.Len(); n > maxStartup {
			t.Fatalf("read %d bytes", n)
		}
	})
}
