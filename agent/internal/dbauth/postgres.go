package dbauth

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/tunnelhq/tunnel/pkg/wire"
)

// Credential is the login the gateway leased for one stream.
type Credential struct {
	User     string
	Password wire.Secret
}

// Limits of the application's startup.
const (
	// maxStartup bounds a startup packet (PostgreSQL's own limit is 10000).
	maxStartup = 10000
	// maxPreludes bounds the SSL and GSS encryption requests refused
	// before the startup.
	maxPreludes = 2
	// LoginTimeout bounds the login to the server.
	LoginTimeout = 30 * time.Second
)

// ErrCancel: the application's connection carried a cancel request, which
// was passed to the server; there is no session to pass through.
var ErrCancel = errors.New("cancel request passed to the server")

// Postgres speaks for an application to the PostgreSQL server at Addr.
type Postgres struct {
	// Addr is the server's HOST:PORT.
	Addr string
	// Dial, if set, dials the server (tests); else net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Serve reads the application's startup from app, logs in to the server
// as cred with the application's database and settings, tells the
// application it is logged in (with the server's parameters and cancel
// key), and returns the server connection, ready to pass bytes both
// ways. On failure the application gets a PostgreSQL error (FATAL) that
// says why, and Serve returns the error; ErrCancel means a cancel request
// was passed on and the connection is done.
func (p *Postgres) Serve(ctx context.Context, app io.ReadWriter, cred Credential) (net.Conn, error) {
	be := pgproto3.NewBackend(bytes.NewReader(nil), app)
	sm, err := p.startup(ctx, app, be)
	if err != nil {
		return nil, err
	}
	if sm == nil {
		return nil, ErrCancel
	}
	cfg, err := p.config(sm, cred)
	if err != nil {
		fatal(be, "08004", err.Error())
		return nil, err
	}
	lctx, cancel := context.WithTimeout(ctx, LoginTimeout)
	defer cancel()
	conn, err := pgconn.ConnectConfig(lctx, cfg)
	if err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			fatal(be, pe.Code, "the tunnel agent could not log in to the database with the credential Vault issued: "+pe.Message)
		} else {
			fatal(be, "08006", "the tunnel agent could not log in to the database: "+cleanError(err))
		}
		return nil, fmt.Errorf("log in to PostgreSQL at %s as %s: %w", p.Addr, cred.User, err)
	}
	hc, err := conn.Hijack()
	if err != nil {
		_ = conn.Close(context.Background())
		fatal(be, "08006", "the tunnel agent could not take over its database connection")
		return nil, fmt.Errorf("take over the PostgreSQL connection: %w", err)
	}
	if hc.Frontend.ReadBufferLen() > 0 {
		// The server said more after ReadyForQuery than this side read:
		// those bytes cannot be handed on.
		hc.Conn.Close()
		fatal(be, "08006", "the database sent data before the session started; try again")
		return nil, errors.New("PostgreSQL sent data after ReadyForQuery")
	}
	if v := sm.ProtocolVersion; v != pgproto3.ProtocolVersion30 || len(unknownOptions(sm)) > 0 {
		// This side logged in with protocol 3.0 and no extensions: the
		// application is told so, as a server would.
		be.Send(&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: 0, UnrecognizedOptions: unknownOptions(sm)})
	}
	be.Send(&pgproto3.AuthenticationOk{})
	for _, k := range slices.Sorted(maps.Keys(hc.ParameterStatuses)) {
		be.Send(&pgproto3.ParameterStatus{Name: k, Value: hc.ParameterStatuses[k]})
	}
	be.Send(&pgproto3.BackendKeyData{ProcessID: hc.PID, SecretKey: hc.SecretKey})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: hc.TxStatus})
	if err := be.Flush(); err != nil {
		hc.Conn.Close()
		return nil, fmt.Errorf("answer the application: %w", err)
	}
	return hc.Conn, nil
}

// startup reads the application's startup: SSL and GSS encryption
// requests are declined ('N': the application is on this side of the
// tunnel, on loopback; the server side gets TLS), a cancel request is
// passed to the server (nil, nil), and the startup message returned.
func (p *Postgres) startup(ctx context.Context, app io.ReadWriter, be *pgproto3.Backend) (*pgproto3.StartupMessage, error) {
	for range maxPreludes + 1 {
		msg, err := ReadStartup(app)
		if err != nil {
			return nil, err
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			if _, err := app.Write([]byte{'N'}); err != nil {
				return nil, fmt.Errorf("decline encryption: %w", err)
			}
		case *pgproto3.CancelRequest:
			return nil, p.cancel(ctx, m)
		case *pgproto3.StartupMessage:
			if m.Parameters["replication"] != "" && m.Parameters["replication"] != "false" {
				fatal(be, "0A000", "replication connections are not passed through the tunnel agent's login")
				return nil, errors.New("the application asked for a replication connection")
			}
			return m, nil
		default:
			return nil, fmt.Errorf("unexpected startup message %T", msg)
		}
	}
	fatal(be, "08P01", "too many encryption requests before the startup message")
	return nil, errors.New("too many encryption requests")
}

// ReadStartup reads one startup packet from r, and no byte more, and
// decodes it with pgproto3: a StartupMessage, SSLRequest, GSSEncRequest
// or CancelRequest.
func ReadStartup(r io.Reader) (pgproto3.FrontendMessage, error) {
	var pre [4]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, fmt.Errorf("read the application's startup: %w", err)
	}
	n := int(binary.BigEndian.Uint32(pre[:]))
	if n < 8 || n > maxStartup {
		return nil, fmt.Errorf("the application's startup packet is %d bytes: not PostgreSQL", n)
	}
	b := make([]byte, n)
	copy(b, pre[:])
	if _, err := io.ReadFull(r, b[4:]); err != nil {
		return nil, fmt.Errorf("read the application's startup: %w", err)
	}
	msg, err := pgproto3.NewBackend(bytes.NewReader(b), io.Discard).ReceiveStartupMessage()
	if err != nil {
		return nil, fmt.Errorf("the application's startup: %w", err)
	}
	return msg, nil
}

// cancel passes a cancel request to the server (which needs no login).
func (p *Postgres) cancel(ctx context.Context, m *pgproto3.CancelRequest) error {
	b, err := m.Encode(nil)
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, err := p.dial(dctx, "tcp", p.Addr)
	if err != nil {
		return fmt.Errorf("pass a cancel request: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(b); err != nil {
		return fmt.Errorf("pass a cancel request: %w", err)
	}
	// The server closes the connection once it has read the request.
	_, _ = io.Copy(io.Discard, io.LimitReader(c, 1))
	return ErrCancel
}

func (p *Postgres) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if p.Dial != nil {
		return p.Dial(ctx, network, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// config is the login: the server, TLS if it offers it (sslmode=prefer),
// cred, and the application's database and settings.
func (p *Postgres) config(sm *pgproto3.StartupMessage, cred Credential) (*pgconn.Config, error) {
	host, port, err := net.SplitHostPort(p.Addr)
	if err != nil {
		return nil, fmt.Errorf("service address %q: %w", p.Addr, err)
	}
	// What is written here overrides the agent's environment (PG*
	// variables); the password is the leased one, so no password file is
	// read.
	cfg, err := pgconn.ParseConfigWithOptions(fmt.Sprintf("host=%s port=%s sslmode=prefer", quote(host), quote(port)),
		pgconn.ParseConfigOptions{})
	if err != nil {
		return nil, fmt.Errorf("service address %q: %w", p.Addr, err)
	}
	cfg.User, cfg.Password = cred.User, cred.Password.Reveal()
	cfg.Database = sm.Parameters["database"]
	if cfg.Database == "" {
		// As PostgreSQL: the database named as the user the application gave.
		cfg.Database = sm.Parameters["user"]
	}
	cfg.RuntimeParams = map[string]string{}
	for k, v := range sm.Parameters {
		switch {
		case k == "user" || k == "database" || strings.HasPrefix(k, "_pq_."):
		default:
			cfg.RuntimeParams[k] = v
		}
	}
	cfg.DialFunc = p.dial
	cfg.ConnectTimeout = LoginTimeout
	cfg.OnNotice, cfg.OnNotification, cfg.OnPgError = nil, nil, nil
	for _, fb := range cfg.Fallbacks {
		if fb.TLSConfig != nil {
			fb.TLSConfig.MinVersion = tls.VersionTLS12
		}
	}
	if cfg.TLSConfig != nil {
		cfg.TLSConfig.MinVersion = tls.VersionTLS12
	}
	return cfg, nil
}

// unknownOptions lists the protocol options (_pq_.*) the application
// asked for: not supported here.
func unknownOptions(sm *pgproto3.StartupMessage) []string {
	var out []string
	for k := range sm.Parameters {
		if strings.HasPrefix(k, "_pq_.") {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// fatal tells the application, as a server would, why its session ends.
func fatal(be *pgproto3.Backend, code, msg string) {
	be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg})
	_ = be.Flush()
}

// cleanError is err's message on one line.
func cleanError(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
