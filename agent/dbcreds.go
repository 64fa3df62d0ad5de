package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"regexp"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/agent/internal/dbauth"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// Database credentials the application never sees: a service exposed
// with credentials: {vault: MOUNT/creds/ROLE} gets, with each stream, a
// short-lived credential the gateway leased from Vault's database engine
// for the caller (pkg/wire's DBUser and DBPassword). The agent takes the
// application's startup with any user name and no password, logs in to
// the database itself with that credential (agent/internal/dbauth), and
// then passes the session through.

// dbProtocols are the protocols the agent can log in with.
var dbProtocols = map[string]bool{"postgres": true, "mysql": true}

// vaultDBPathRE is MOUNT/creds/ROLE.
var vaultDBPathRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/creds/[A-Za-z0-9_.-]+$`)

// checkCredentials validates the credentials: key of expose item e.
func checkCredentials(e Expose, item string, lines map[string]int, missing func(item, key, hint string) error) error {
	path := item + ".credentials"
	if e.Credentials.Vault == "" {
		return missing(path, "vault", "give the Vault path of the database role, for example database/creds/orders-app")
	}
	if !vaultDBPathRE.MatchString(e.Credentials.Vault) || len(e.Credentials.Vault) > 255 {
		return &configError{path + ".vault", lines[path+".vault"], fmt.Sprintf(
			"%q is not a Vault database credential path: use MOUNT/creds/ROLE, for example database/creds/orders-app", e.Credentials.Vault)}
	}
	if !dbProtocols[e.Protocol] {
		if _, ok := lines[item+".protocol"]; !ok && lines != nil {
			return &configError{item, lines[item], "missing key protocol; a service with credentials needs protocol: postgres or mysql (the agent logs in to the database for the caller)"}
		}
		return &configError{item + ".protocol", lines[item+".protocol"], fmt.Sprintf(
			"%q: with credentials, use postgres or mysql (the protocol the agent logs in to the database with; mysql also serves MariaDB)", e.Protocol)}
	}
	return nil
}

// serveDB serves a stream to a service that logs in for the caller: once
// the stream may pass bytes, the agent takes the application's startup,
// logs in to the database with cred, and passes the session through. A
// login that fails is told to the application in its protocol.
func (a *Agent) serveDB(ctx context.Context, st *quic.Stream, svc Expose, caller, ticket string, x expectation,
	cred dbauth.Credential, lmu *sync.Mutex, local *transport.TCP) {
	if ticket != "" && x.committed != nil {
		// Nothing passes before the gateway's audit event is durable.
		t := time.NewTimer(transport.HeaderTimeout)
		select {
		case <-x.committed:
			t.Stop()
		case <-st.Context().Done():
			t.Stop()
			return
		case <-t.C:
			refuse(st, wire.StatusInternal, "the gateway did not confirm this stream's audit event")
			return
		}
	}
	if err := wire.WriteReply(st, wire.Reply{Status: wire.StatusOK}); err != nil {
		st.CancelRead(transport.StreamCanceled)
		st.CancelWrite(transport.StreamCanceled)
		return
	}
	remote := transport.Stream{Stream: st}
	stop := context.AfterFunc(ctx, func() {
		remote.Abort()
		lmu.Lock()
		defer lmu.Unlock()
		if local.TCPConn != nil {
			local.Abort()
		}
	})
	defer stop()
	_ = st.SetReadDeadline(time.Now().Add(dbauth.LoginTimeout))
	var (
		server net.Conn
		err    error
	)
	switch svc.Protocol {
	case "postgres":
		server, err = (&dbauth.Postgres{Addr: svc.Address}).Serve(ctx, st, cred)
	case "mysql":
		var s *dbauth.MySQLSession
		if s, err = (&dbauth.MySQL{Addr: svc.Address}).Serve(ctx, st, cred); err == nil {
			// The login holds the stream until the session is over.
			defer s.Release()
			server = s.Server
		}
	default:
		err = fmt.Errorf("logging in with protocol %q is not supported", svc.Protocol)
	}
	_ = st.SetReadDeadline(time.Time{})
	switch {
	case errors.Is(err, dbauth.ErrCancel):
		_ = st.Close()
		st.CancelRead(transport.StreamCanceled)
		return
	case err != nil:
		a.log.Warn("database login for the caller failed", "service", svc.Name, "caller", caller, "db_user", cred.User, "err", err)
		_ = st.Close()
		st.CancelRead(transport.StreamCanceled)
		return
	}
	lmu.Lock()
	local.TCPConn = tcpOf(server)
	lmu.Unlock()
	a.log.Debug("stream delivered, logged in to the database", "service", svc.Name, "caller", caller, "db_user", cred.User, "direct", ticket != "")
	transport.Splice(dbauth.Endpoint{Conn: server}, remote)
}

// tcpOf is the TCP connection under c (nil if none).
func tcpOf(c net.Conn) *net.TCPConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	t, _ := c.(*net.TCPConn)
	return t
}
