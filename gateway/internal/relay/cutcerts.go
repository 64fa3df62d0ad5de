package relay

import (
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/transport"
)

// Reasons a connection closed by EndCerts gives its peer.
const (
	reasonAgentCertRevoked = "this agent's certificate was revoked (the agent was enrolled again, or an administrator revoked it): enrol it with a new join token"
	reasonUserCertRevoked  = "your certificate was revoked: run tunnel login again"
)

// EndCerts closes every live QUIC connection here, an agent's (current or
// retiring) or a user's, that was authenticated with one of the X.509
// certificates revoked names (other kinds authenticate no QUIC
// connection and are ignored), and returns how many it closes. An
// agent's leaves the registry at once (no new stream reaches it); each
// closes after a short grace (sshGrace), and its streams end with it.
// The fan-out of revocations made on other gateways calls it
// (gateway/fanout.go), as does the reconciliation sweep with the whole
// deny list; a connection opened with a newer certificate of the same
// agent or user is left alone.
//
// When every certificate names its subject, only the connections of those
// agents and users are looked at; otherwise all of them.
func (s *Server) EndCerts(revoked []store.IssuedCert) int {
	serials := map[string]struct{}{}
	names := map[string]struct{}{}
	anyName := false
	for _, c := range revoked {
		if c.Kind != store.CertX509 || c.Serial == "" {
			continue
		}
		serials[c.Serial] = struct{}{}
		if c.Subject == "" {
			anyName = true
		}
		names[c.Subject] = struct{}{}
	}
	if len(serials) == 0 {
		return 0
	}
	// A revoked certificate no longer keeps an agent's older connections
	// alive past their own certificates (their life follows the newest
	// certificate the agent proved: registry.extend).
	s.reg.withdrawProofs(serials)
	wanted := func(name string) bool {
		if anyName {
			return true
		}
		_, ok := names[name]
		return ok
	}
	var agents []*agentConn
	var users []*quic.Conn
	var userNames []string
	r := &s.reg
	r.mu.Lock()
	for name, ac := range r.agents {
		if wanted(name) {
			agents = append(agents, ac)
		}
	}
	for ac := range r.retiring {
		if wanted(ac.name) {
			agents = append(agents, ac)
		}
	}
	for name, cs := range r.userConns {
		if !wanted(name) {
			continue
		}
		for c := range cs {
			users = append(users, c)
			userNames = append(userNames, name)
		}
	}
	r.mu.Unlock()

	// The serials are read outside the registry's lock: the TLS state is
	// the connection's own.
	type victim struct {
		conn   *quic.Conn
		reason string
	}
	var vs []victim
	for _, ac := range agents {
		serial := peerSerial(ac.conn)
		if _, ok := serials[serial]; !ok {
			continue
		}
		// No new stream reaches it from now on, current or retiring.
		s.reg.dropConn(ac)
		vs = append(vs, victim{ac.conn, reasonAgentCertRevoked})
		s.log().Info("closing an agent connection: its certificate was revoked", "agent", ac.name, "serial", serial)
	}
	for i, c := range users {
		serial := peerSerial(c)
		if _, ok := serials[serial]; !ok {
			continue
		}
		vs = append(vs, victim{c, reasonUserCertRevoked})
		s.log().Info("closing a user connection: its certificate was revoked", "user", userNames[i], "serial", serial)
	}
	// The streams of a revoked certificate, relayed or direct, end now
	// with the revocation's code (the caller is told why; a direct
	// stream's target is sent its cut), as EndAgent's do; those of a
	// newer certificate of the same name go on. A bastion session's
	// stream is left to the session's end, as EndUser and EndAgent leave
	// it: its node sends the user the reason over SSH, which a reset
	// here would overtake; the connection's close after the grace ends it
	// in any case.
	now := time.Now()
	cut := s.streamsWhere(func(l *liveStream) bool {
		_, c := serials[l.callerSerial]
		_, t := serials[l.targetSerial]
		return l.session == "" && (c && l.callerSerial != "" || t && l.targetSerial != "")
	})
	for _, l := range cut {
		l.markRevoked(now)
		l.abort(transport.StreamRevoked)
	}
	if len(vs) == 0 {
		return 0
	}
	// After the same grace as EndUser and EndAgent: what a lock or a
	// session's end has just sent on these connections (the streams' cut
	// reasons, the node's message) goes out before the connection closes.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		time.Sleep(sshGrace)
		for _, v := range vs {
			v.conn.CloseWithError(transport.CodeRevoked, v.reason)
		}
	}()
	return len(vs)
}

// peerSerial is the serial (lowercase hex) of the certificate the peer of
// c presented, resumed or not; "" if none.
func peerSerial(c *quic.Conn) string {
	chain := c.ConnectionState().TLS.PeerCertificates
	if len(chain) == 0 {
		return ""
	}
	return certs.X509SerialHex(chain[0])
}
