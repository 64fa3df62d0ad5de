package dbauth

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"vitess.io/vitess/go/mysql"
	"vitess.io/vitess/go/mysql/sqlerror"
	"vitess.io/vitess/go/sqltypes"
	querypb "vitess.io/vitess/go/vt/proto/query"

	"github.com/tunnelhq/tunnel/pkg/wire"
)

// fakeMySQL is a MySQL server made of Vitess's go/mysql for these tests:
// it accepts only user/password, records the capabilities each login
// negotiated and the database each selected, and answers "rows N" with N
// rows and "whoami" with the user; "use X" fails for any X but app.
type fakeMySQL struct {
	l    *mysql.Listener
	addr string
	done chan struct{}

	mu    sync.Mutex
	caps  []uint32
	dbs   []string
	users []string
}

const (
	fakeMySQLUser     = "v-token-shop-1"
	fakeMySQLPassword = "A1a-secret"
)

func startFakeMySQL(t testing.TB) *fakeMySQL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	env, err := mysqlEnv()
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeMySQL{addr: ln.Addr().String(), done: make(chan struct{})}
	auth := mysql.NewAuthServerStatic("", fmt.Sprintf(`{%q: [{"Password": %q}]}`, fakeMySQLUser, fakeMySQLPassword), 0)
	f.l, err = mysql.NewListenerWithConfig(mysql.ListenerConfig{Listener: ln, AuthServer: auth, Handler: &fakeHandler{noCommands: noCommands{env: env}, f: f}})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(f.done)
		f.l.Accept()
	}()
	t.Cleanup(func() {
		f.l.Close()
		<-f.done
	})
	return f
}

type fakeHandler struct {
	noCommands
	f *fakeMySQL
}

func (h *fakeHandler) NewConnection(*mysql.Conn)    {}
func (h *fakeHandler) ConnectionClosed(*mysql.Conn) {}
func (h *fakeHandler) ConnectionReady(c *mysql.Conn) {
	h.f.mu.Lock()
	defer h.f.mu.Unlock()
	h.f.caps = append(h.f.caps, c.Capabilities)
	h.f.users = append(h.f.users, c.User)
}

func (h *fakeHandler) ComQuery(c *mysql.Conn, query string, callback func(*sqltypes.Result) error) error {
	switch {
	case strings.HasPrefix(query, "use "):
		db := strings.Trim(strings.TrimPrefix(query, "use "), "`")
		if db != "app" {
			return sqlerror.NewSQLErrorf(sqlerror.ERDBAccessDenied, sqlerror.SSAccessDeniedError, "Access denied for user '%s'@'%%' to database '%s'", c.User, db)
		}
		h.f.mu.Lock()
		h.f.dbs = append(h.f.dbs, db)
		h.f.mu.Unlock()
		return callback(&sqltypes.Result{})
	case query == "whoami":
		return callback(&sqltypes.Result{
			Fields: []*querypb.Field{{Name: "user", Type: querypb.Type_VARCHAR, Charset: 33}},
			Rows:   [][]sqltypes.Value{{sqltypes.NewVarChar(c.User)}},
		})
	case strings.HasPrefix(query, "rows "):
		n, _ := strconv.Atoi(strings.TrimPrefix(query, "rows "))
		r := &sqltypes.Result{Fields: []*querypb.Field{{Name: "n", Type: querypb.Type_INT64, Charset: 63}}}
		for i := range n {
			r.Rows = append(r.Rows, []sqltypes.Value{sqltypes.NewInt64(int64(i))})
		}
		return callback(r)
	}
	return sqlerror.NewSQLErrorf(sqlerror.ERSyntaxError, sqlerror.SSClientError, "unknown query %q", query)
}

// front listens for applications: each connection is logged in to srv as
// cred by MySQL.Serve and then passed through. It returns the address and
// the errors of the logins, one per connection.
func front(t *testing.T, srv string, cred Credential) (string, <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				s, err := (&MySQL{Addr: srv}).Serve(context.Background(), c, cred)
				errs <- err
				if err != nil {
					return
				}
				defer s.Release()
				defer s.Server.Close()
				done := make(chan struct{})
				go func() {
					defer close(done)
					_, _ = io.Copy(s.Server, c)
					s.Server.Close()
				}()
				_, _ = io.Copy(c, s.Server)
				c.Close()
				<-done
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String(), errs
}

func appParams(t *testing.T, addr string) *mysql.ConnParams {
	t.Helper()
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	return &mysql.ConnParams{Host: host, Port: p, Uname: "anyone", DbName: "app", ConnectTimeoutMs: 10000}
}

// TestMySQLLogsInForTheApplication: an application with any user name
// and no password is logged in as the leased user with its database, and
// its session passes through, with and without DEPRECATE_EOF: the login
// to the server negotiates what the application chose.
func TestMySQLLogsInForTheApplication(t *testing.T) {
	f := startFakeMySQL(t)
	addr, errs := front(t, f.addr, Credential{User: fakeMySQLUser, Password: wire.Secret(fakeMySQLPassword)})
	for _, noDeprecateEOF := range []bool{false, true} {
		t.Run(fmt.Sprintf("deprecate_eof=%v", !noDeprecateEOF), func(t *testing.T) {
			p := appParams(t, addr)
			p.DisableClientDeprecateEOF = noDeprecateEOF
			c, err := mysql.Connect(context.Background(), p)
			if err != nil {
				t.Fatalf("connect through the agent: %v", err)
			}
			defer c.Close()
			if err := <-errs; err != nil {
				t.Fatalf("Serve: %v", err)
			}
			r, err := c.ExecuteFetch("whoami", 10, true)
			if err != nil || len(r.Rows) != 1 || r.Rows[0][0].ToString() != fakeMySQLUser {
				t.Fatalf("whoami: %v, %v; want %s", r, err, fakeMySQLUser)
			}
			r, err = c.ExecuteFetch("rows 5000", 10000, true)
			if err != nil || len(r.Rows) != 5000 || r.Rows[4999][0].ToString() != "4999" {
				t.Fatalf("rows 5000: %d rows, %v", len(r.Rows), err)
			}
			// An error from the server passes through too, and the
			// session goes on.
			if _, err := c.ExecuteFetch("nonsense", 1, false); err == nil || !strings.Contains(err.Error(), "unknown query") {
				t.Errorf("an unknown query: %v; want the server's error", err)
			}
			if _, err := c.ExecuteFetch("rows 1", 1, false); err != nil {
				t.Errorf("after an error: %v", err)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			last := f.caps[len(f.caps)-1]
			if got := last&mysql.CapabilityClientDeprecateEOF != 0; got == noDeprecateEOF {
				t.Errorf("the server login negotiated DEPRECATE_EOF %v; the application asked %v", got, !noDeprecateEOF)
			}
			if f.dbs[len(f.dbs)-1] != "app" {
				t.Errorf("the server login selected %v; want app", f.dbs)
			}
		})
	}
}

// TestMySQLLoginRefusals: a refused login, an unreachable server and a
// database the user may not use reach the application as MySQL errors
// that say why, and Serve returns them.
func TestMySQLLoginRefusals(t *testing.T) {
	f := startFakeMySQL(t)
	cases := []struct {
		name, srv, pw, db, app, serve string
	}{
		{"wrong password", f.addr, "wrong", "app",
			"the tunnel agent could not log in to the database with the credential Vault issued: Access denied for user",
			"log in to MySQL at " + f.addr + " as " + fakeMySQLUser},
		{"server down", "127.0.0.1:1", fakeMySQLPassword, "app",
			"the tunnel agent could not log in to the database: ", "log in to MySQL at 127.0.0.1:1"},
		{"database refused", f.addr, fakeMySQLPassword, "secrets",
			"Access denied for user '" + fakeMySQLUser + "'@'%' to database 'secrets'", "select the application's database"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, errs := front(t, tc.srv, Credential{User: fakeMySQLUser, Password: wire.Secret(tc.pw)})
			p := appParams(t, addr)
			p.DbName = tc.db
			c, err := mysql.Connect(context.Background(), p)
			if err == nil {
				c.Close()
				t.Fatal("the application logged in")
			}
			if !strings.Contains(err.Error(), tc.app) {
				t.Errorf("the application got %q; want it to say %q", err, tc.app)
			}
			select {
			case err := <-errs:
				if err == nil || !strings.Contains(err.Error(), tc.serve) {
					t.Errorf("Serve: %v; want %q", err, tc.serve)
				}
				if err != nil && strings.Contains(err.Error(), tc.pw) && tc.pw != "" {
					t.Errorf("Serve's error holds the password: %v", err)
				}
			case <-time.After(time.Minute):
				t.Fatal("Serve did not return")
			}
		})
	}
}

// TestMySQLApplicationLeaves: an application that connects and leaves, or
// sends garbage, ends Serve with an error and nothing held.
func TestMySQLApplicationLeaves(t *testing.T) {
	f := startFakeMySQL(t)
	addr, errs := front(t, f.addr, Credential{User: fakeMySQLUser, Password: wire.Secret(fakeMySQLPassword)})
	for _, send := range []string{"", "GET / HTTP/1.1\r\n\r\n", "\x05\x00\x00\x01\x00\x00\x00\x00\x00"} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte(send))
		c.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, c)
		c.Close()
		select {
		case err := <-errs:
			if err == nil {
				t.Errorf("Serve logged in an application that sent %q", send)
			}
		case <-time.After(time.Minute):
			t.Fatalf("Serve did not return after the application sent %q and left", send)
		}
	}
	// A real application still gets in.
	c, err := mysql.Connect(context.Background(), appParams(t, addr))
	if err != nil {
		t.Fatalf("connect after the junk: %v", err)
	}
	c.Close()
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}

func init() {
	// The protocol library's own log lines (refused logins, junk) are
	// expected here.
	SetMySQLLog(slog.New(slog.DiscardHandler))
}

// FuzzMySQLServe: whatever an application sends as its handshake, Serve
// returns (an error, or a session once logged in) and never hangs or
// panics; the server is a real one of the fake kind.
func FuzzMySQLServe(f *testing.F) {
	// A real handshake response (mysql_native_password, user "anyone",
	// empty password, database "app"), as a client sends it after the
	// greeting.
	resp := "\x85\xa2\xbf\x01\x00\x00\x00\x01\x21" + strings.Repeat("\x00", 23) + "anyone\x00\x00app\x00mysql_native_password\x00"
	// The empty password is answered with an auth switch; the client's
	// empty answer to it follows.
	f.Add([]byte(string([]byte{byte(len(resp)), 0, 0, 1}) + resp + "\x00\x00\x00\x03"))
	f.Add([]byte("\x05\x00\x00\x01\x00\x00\x00\x00\x00"))
	f.Add([]byte{})
	srv := startFakeMySQL(f)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer ln.Close()
	f.Fuzz(func(t *testing.T, in []byte) {
		app, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer app.Close()
		agent, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer agent.Close()
		// The application sends in and ends its side, reading whatever it
		// is told until the agent closes.
		var wg sync.WaitGroup
		wg.Go(func() {
			_, _ = app.Write(in)
			_ = app.(*net.TCPConn).CloseWrite()
		})
		wg.Go(func() { _, _ = io.Copy(io.Discard, app) })
		_ = agent.SetDeadline(time.Now().Add(30 * time.Second))
		s, err := (&MySQL{Addr: srv.addr}).Serve(context.Background(), agent, Credential{User: fakeMySQLUser, Password: wire.Secret(fakeMySQLPassword)})
		if err == nil {
			s.Server.Close()
			s.Release()
		}
		agent.Close()
		app.Close()
		wg.Wait()
	})
}
