package dbauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"vitess.io/vitess/go/mysql"
	"vitess.io/vitess/go/mysql/replication"
	"vitess.io/vitess/go/mysql/sqlerror"
	"vitess.io/vitess/go/sqltypes"
	vtlog "vitess.io/vitess/go/vt/log"
	querypb "vitess.io/vitess/go/vt/proto/query"
	"vitess.io/vitess/go/vt/vtenv"
	"vitess.io/vitess/go/vt/vttls"
)

// MySQL and MariaDB (this file) are spoken with Vitess's go/mysql: its
// server side (a Listener over the one application stream) sends the
// greeting, reads the application's handshake response and answers it
// with mysql_native_password and any password; its client side logs in to
// the server with the leased credential (TLS where the server offers it,
// mysql_native_password or caching_sha2_password). The two sides agree on
// every capability that changes the wire format after the login
// (DEPRECATE_EOF, FOUND_ROWS, MULTI_STATEMENTS: the application's choice
// is the server login's), so that the session then passes through
// untouched, byte for byte.

// MySQLVersion is the server version the application's greeting names (the
// real server's is known only once logged in, after the greeting).
const MySQLVersion = "8.0.40-tunnel"

// MySQL speaks for an application to the MySQL or MariaDB server at Addr.
type MySQL struct {
	// Addr is the server's HOST:PORT.
	Addr string
}

// SetMySQLLog sends the MySQL protocol library's own messages (one
// logger for the process) to l.
func SetMySQLLog(l *slog.Logger) { vtlog.SwapLogger(l) }

// AppStream is the application's side: a stream with deadlines (a QUIC
// stream, a net.Conn).
type AppStream interface {
	io.ReadWriter
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// MySQLSession is a logged-in server connection. Pass the session
// through between the application's stream and Server, then call Release
// once (it waits for the login's last goroutine).
type MySQLSession struct {
	Server  net.Conn
	release func()
}

// Release ends the login's hold on the application's stream. Call it once
// the session is passed through; it is safe to call twice.
func (s *MySQLSession) Release() { s.release() }

// Serve greets the application on app, takes its handshake response with
// any user name and password, logs in to the server as cred with the
// application's database, character set and capabilities, tells the
// application it is logged in, and returns the server connection, ready
// to pass bytes both ways. On failure the application gets a MySQL error
// that says why, and Serve returns the error.
func (m *MySQL) Serve(ctx context.Context, app AppStream, cred Credential) (*MySQLSession, error) {
	env, err := mysqlEnv()
	if err != nil {
		return nil, fmt.Errorf("the MySQL protocol library: %w", err)
	}
	host, portStr, err := net.SplitHostPort(m.Addr)
	if err != nil {
		return nil, fmt.Errorf("service address %q: %w", m.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("service address %q: the port is not a number", m.Addr)
	}
	ac := &appConn{s: app}
	ln := newOneConnListener(ac)
	h := &mysqlLogin{
		noCommands: noCommands{env: env}, ctx: ctx, cred: cred, host: host, port: port, addr: m.Addr,
		ready:  make(chan *mysql.Conn, 1),
		closed: make(chan struct{}),
		resume: make(chan struct{}),
	}
	auth := &mysqlAuth{login: h}
	auth.methods = []mysql.AuthMethod{mysql.NewMysqlNativeAuthMethod(auth, auth)}
	l, err := mysql.NewListenerWithConfig(mysql.ListenerConfig{Listener: ln, AuthServer: auth, Handler: h})
	if err != nil {
		return nil, fmt.Errorf("the MySQL protocol library: %w", err)
	}
	l.ServerVersion = MySQLVersion
	l.AllowClearTextWithoutTLS.Store(false)
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		l.Accept()
	}()
	// The Listener's connection goroutine ends by calling
	// ConnectionClosed; Accept ends once the listener is closed.
	wait := func() {
		<-h.closed
		l.Close()
		<-accepted
	}
	select {
	case c := <-h.ready:
		up := h.upstream()
		if up == nil || c.Buffered() > 0 || up.Buffered() > 0 {
			ac.release()
			close(h.resume)
			wait()
			if up != nil {
				up.Close()
			}
			return nil, errors.New("data arrived before the login ended: it cannot be passed on")
		}
		raw := up.GetRawConn()
		var once sync.Once
		return &MySQLSession{Server: raw, release: func() {
			once.Do(func() {
				ac.release()
				close(h.resume)
				wait()
			})
		}}, nil
	case <-h.closed:
		l.Close()
		<-accepted
		if up := h.upstream(); up != nil {
			up.Close()
		}
		if err := h.failure(); err != nil {
			return nil, err
		}
		return nil, errors.New("the application left before its login ended")
	}
}

// mysqlEnv is the protocol library's environment (collations, parser),
// made once.
var mysqlEnv = sync.OnceValues(func() (*vtenv.Environment, error) {
	return vtenv.New(vtenv.Options{MySQLServerVersion: "8.0.40"})
})

// mysqlLogin is the Listener's handler for one application: the login to
// the server happens when the application's handshake response arrives
// (UserEntryWithHash), its initial database is selected on the server
// (ComQuery "use"), and once the application is told it is logged in
// (ConnectionReady) the connection is handed to Serve's caller; no
// command is served here.
type mysqlLogin struct {
	noCommands
	ctx             context.Context
	cred            Credential
	host, addr      string
	port            int
	ready           chan *mysql.Conn
	closed, resume  chan struct{}
	mu              sync.Mutex
	up              *mysql.Conn
	err             error
	closeOnce       sync.Once
	connectionsSeen atomic.Int32
}

func (h *mysqlLogin) upstream() *mysql.Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.up
}

func (h *mysqlLogin) failure() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

func (h *mysqlLogin) fail(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err == nil {
		h.err = err
	}
}

// login logs in to the server for application connection c: its
// capabilities that shape the wire (DEPRECATE_EOF, FOUND_ROWS,
// MULTI_STATEMENTS) and its character set are the login's.
func (h *mysqlLogin) login(c *mysql.Conn) error {
	p := &mysql.ConnParams{
		Host: h.host, Port: h.port, Uname: h.cred.User, Pass: h.cred.Password.Reveal(),
		Charset:                   c.CharacterSet,
		TLSMinVersion:             "TLSv1.2",
		ConnectTimeoutMs:          uint64(LoginTimeout / time.Millisecond),
		DisableClientDeprecateEOF: c.Capabilities&mysql.CapabilityClientDeprecateEOF == 0,
		EnableMultiStatements:     c.Capabilities&mysql.CapabilityClientMultiStatements != 0,
	}
	if c.Capabilities&mysql.CapabilityClientFoundRows != 0 {
		p.Flags |= mysql.CapabilityClientFoundRows
	}
	ctx, cancel := context.WithTimeout(h.ctx, LoginTimeout)
	defer cancel()
	up, err := connectPreferTLS(ctx, p, h.addr)
	if err != nil {
		var se *sqlerror.SQLError
		if errors.As(err, &se) && se.Num < 2000 {
			// The server's own refusal (client errors are 2000 and up).
			h.fail(fmt.Errorf("log in to MySQL at %s as %s: %w", h.addr, h.cred.User, err))
			return sqlerror.NewSQLError(se.Num, se.State,
				"the tunnel agent could not log in to the database with the credential Vault issued: "+se.Message)
		}
		h.fail(fmt.Errorf("log in to MySQL at %s as %s: %w", h.addr, h.cred.User, err))
		return sqlerror.NewSQLError(sqlerror.CRConnHostError, sqlerror.SSNetError,
			"the tunnel agent could not log in to the database: "+cleanError(err))
	}
	h.mu.Lock()
	h.up = up
	h.mu.Unlock()
	return nil
}

// connectPreferTLS logs in with TLS if the server offers it, as
// PostgreSQL's sslmode=prefer: the library's "preferred" mode asks for TLS
// even of a server that does not offer it, and fails; then the login is
// tried again in the clear, and the server remembered as one without TLS
// for a while. A refusal by the server itself (an error below 2000) is
// final.
func connectPreferTLS(ctx context.Context, p *mysql.ConnParams, addr string) (*mysql.Conn, error) {
	if until, ok := clearServers.Load(addr); !ok || time.Now().After(until.(time.Time)) {
		p.SslMode = vttls.Preferred
		up, err := mysql.Connect(ctx, p)
		var se *sqlerror.SQLError
		if err == nil || ctx.Err() != nil || errors.As(err, &se) && se.Num < 2000 {
			return up, err
		}
	}
	p.SslMode = vttls.Disabled
	up, err := mysql.Connect(ctx, p)
	if err == nil {
		clearServers.Store(addr, time.Now().Add(clearServerMemory))
	}
	return up, err
}

// clearServers holds the servers (HOST:PORT) that took a login without TLS
// after a login with TLS failed, until when (a time.Time) they are not
// asked for TLS again.
var clearServers sync.Map

const clearServerMemory = 10 * time.Minute

func (h *mysqlLogin) NewConnection(*mysql.Conn) {}

// ConnectionReady: the application is logged in. Its connection is handed
// over, and this goroutine (the Listener's) waits until Serve's caller
// has passed the session through; then the application's stream reads as
// ended and the Listener lets go of it.
func (h *mysqlLogin) ConnectionReady(c *mysql.Conn) {
	if h.connectionsSeen.Add(1) != 1 {
		return
	}
	h.ready <- c
	<-h.resume
}

func (h *mysqlLogin) ConnectionClosed(*mysql.Conn) {
	h.closeOnce.Do(func() { close(h.closed) })
}

// ComQuery runs only the application's initial database selection ("use
// `db`"), on the server, during the login.
func (h *mysqlLogin) ComQuery(_ *mysql.Conn, query string, _ func(*sqltypes.Result) error) error {
	up := h.upstream()
	if up == nil || h.connectionsSeen.Load() > 0 || !strings.HasPrefix(strings.ToLower(query), "use ") {
		return sqlerror.NewSQLError(sqlerror.ERUnknownError, sqlerror.SSUnknownSQLState, "unexpected command during the login")
	}
	if _, err := up.ExecuteFetch(query, 0, false); err != nil {
		h.fail(fmt.Errorf("select the application's database: %w", err))
		return err
	}
	return nil
}

// noCommands answers every command but ComQuery with an error, and
// carries the protocol library's environment: the part of a go/mysql
// Handler that serves nothing.
type noCommands struct{ env *vtenv.Environment }

func (noCommands) ComQueryMulti(*mysql.Conn, string, func(sqltypes.QueryResponse, bool, bool) error) error {
	return errNoCommands
}

func (noCommands) ComPrepare(*mysql.Conn, string) ([]*querypb.Field, uint16, error) {
	return nil, 0, errNoCommands
}

func (noCommands) ComStmtExecute(*mysql.Conn, *mysql.PrepareData, func(*sqltypes.Result) error) error {
	return errNoCommands
}

func (noCommands) ComRegisterReplica(*mysql.Conn, string, uint16, string, string) error {
	return errNoCommands
}

func (noCommands) ComBinlogDump(*mysql.Conn, string, uint32) error { return errNoCommands }

func (noCommands) ComBinlogDumpGTID(*mysql.Conn, string, uint64, replication.GTIDSet, uint16) error {
	return errNoCommands
}

func (noCommands) WarningCount(*mysql.Conn) uint16 { return 0 }
func (noCommands) ComResetConnection(*mysql.Conn)  {}
func (n noCommands) Env() *vtenv.Environment       { return n.env }

var errNoCommands = sqlerror.NewSQLError(sqlerror.ERUnknownError, sqlerror.SSUnknownSQLState,
	"the tunnel agent serves no commands itself")

// mysqlAuth accepts any user name and password from the application
// (mysql_native_password), and logs in to the server for it.
type mysqlAuth struct {
	login   *mysqlLogin
	methods []mysql.AuthMethod
}

func (a *mysqlAuth) AuthMethods() []mysql.AuthMethod { return a.methods }

func (a *mysqlAuth) DefaultAuthMethodDescription() mysql.AuthMethodDescription {
	return mysql.MysqlNativePassword
}

// HandleUser: any user name.
func (a *mysqlAuth) HandleUser(string) bool { return true }

// UserEntryWithHash: whatever the application's password, the login to
// the server decides.
func (a *mysqlAuth) UserEntryWithHash(c *mysql.Conn, _ []byte, _ string, _ []byte, _ net.Addr) (mysql.Getter, error) {
	if err := a.login.login(c); err != nil {
		return nil, err
	}
	return &mysql.StaticUserData{}, nil
}

// appConn is the application's stream as the net.Conn the Listener
// reads: Close is the caller's (not the Listener's), and once released it
// reads as ended, so that the Listener stops.
type appConn struct {
	s        AppStream
	released atomic.Bool
}

func (c *appConn) release() { c.released.Store(true) }

func (c *appConn) Read(b []byte) (int, error) {
	if c.released.Load() {
		return 0, io.EOF
	}
	return c.s.Read(b)
}

func (c *appConn) Write(b []byte) (int, error) {
	if c.released.Load() {
		return 0, net.ErrClosed
	}
	return c.s.Write(b)
}

func (c *appConn) Close() error                       { return nil }
func (c *appConn) LocalAddr() net.Addr                { return streamAddr{} }
func (c *appConn) RemoteAddr() net.Addr               { return streamAddr{} }
func (c *appConn) SetReadDeadline(t time.Time) error  { return c.s.SetReadDeadline(t) }
func (c *appConn) SetWriteDeadline(t time.Time) error { return c.s.SetWriteDeadline(t) }
func (c *appConn) SetDeadline(t time.Time) error {
	return errors.Join(c.s.SetReadDeadline(t), c.s.SetWriteDeadline(t))
}

// streamAddr names the application's side: a tunnel stream.
type streamAddr struct{}

func (streamAddr) Network() string { return "tunnel" }
func (streamAddr) String() string  { return "tunnel stream" }

// oneConnListener hands out one connection, then blocks until closed.
type oneConnListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newOneConnListener(c net.Conn) *oneConnListener {
	l := &oneConnListener{conns: make(chan net.Conn, 1), closed: make(chan struct{})}
	l.conns <- c
	return l
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return streamAddr{} }
