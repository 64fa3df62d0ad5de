// Package transport carries tunnel streams over QUIC: the QUIC and TLS
// settings every component uses, the splice that joins two half-closable
// byte streams with TCP semantics (FIN both ways, resets, back-pressure),
// the listener that turns local TCP connections into tunnel streams, the
// reconnecting backoff, and the UDP buffer check.
//
// Agents use it to dial the gateway and expose local listeners, the gateway
// to relay streams between connections, and `tunnel proxy` to open a local
// listener on an engineer's machine.
package transport

import (
	"crypto/tls"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/wire"
)

// Connection error codes (QUIC application error codes on CONNECTION_CLOSE).
const (
	CodeNoError      quic.ApplicationErrorCode = 0x0
	CodeShutdown     quic.ApplicationErrorCode = 0x1 // the peer is shutting down
	CodeUnauthorized quic.ApplicationErrorCode = 0x2 // certificate refused, locked, unknown
	CodeReplaced     quic.ApplicationErrorCode = 0x3 // a newer connection of the same agent took over
	CodeRevoked      quic.ApplicationErrorCode = 0x4 // access revoked by an administrator
	CodeProtocol     quic.ApplicationErrorCode = 0x5 // the peer broke the wire protocol
)

// Stream error codes (RESET_STREAM / STOP_SENDING); their one home is
// pkg/wire's Cut codes, which also give each its sentence (wire.CutReason).
const (
	StreamReset    = quic.StreamErrorCode(wire.CutReset)    // the TCP connection behind was reset
	StreamCanceled = quic.StreamErrorCode(wire.CutCanceled) // the stream was abandoned (shutdown, error)
	StreamRevoked  = quic.StreamErrorCode(wire.CutRevoked)  // access revoked by an administrator
	StreamExpired  = quic.StreamErrorCode(wire.CutExpired)  // the caller's certificate expired
	// StreamAccessChanged: a change of roles or policy no longer allows
	// the stream.
	StreamAccessChanged = quic.StreamErrorCode(wire.CutAccessChanged)
)

// Timeouts and limits of every QUIC connection.
const (
	// KeepAlive is well below common NAT UDP timeouts (30 s and up).
	KeepAlive = 2 * time.Second
	// IdleTimeout closes a connection that hears nothing for this long:
	// four keepalives in a row lost. It is how a peer that died without a
	// word (SIGKILL, power, network cut) is noticed, so that agents and
	// clients move to another gateway within seconds; a restarted gateway
	// is noticed at once instead (its persistent stateless reset key).
	IdleTimeout = 8 * time.Second
	// Beat is how often a connection to a gateway is looked at (Hearing):
	// an agent whose gateway is silent (Silence) then writes wire.MsgBeat
	// on its control stream, a packet large enough to be answered by a
	// stateless reset, so that a gateway killed and restarted is noticed
	// within a beat, not at the idle timeout; and Failover tries a quiet
	// gateway after the others.
	Beat = time.Second
	// HandshakeTimeout bounds the handshake.
	HandshakeTimeout = 10 * time.Second
	// MaxStreams bounds the concurrent streams a peer may open.
	MaxStreams = 4096
	// HeaderTimeout bounds reading a stream's header or reply.
	HeaderTimeout = 10 * time.Second
)

// Silence is how long a peer that looks every beat must hear nothing
// before it takes the other side for silent: a keepalive, its answer and
// the granularity of the looks.
func Silence(beat time.Duration) time.Duration { return KeepAlive + 2*beat }

// QUICConfig returns the QUIC settings of every tunnel connection: 0-RTT
// off (replayable), keepalives, idle and handshake timeouts, bounded
// streams, flow-control windows large enough for bulk transfers.
func QUICConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:           HandshakeTimeout,
		MaxIdleTimeout:                 IdleTimeout,
		KeepAlivePeriod:                KeepAlive,
		MaxIncomingStreams:             MaxStreams,
		MaxIncomingUniStreams:          -1,
		InitialStreamReceiveWindow:     1 << 20,
		MaxStreamReceiveWindow:         16 << 20,
		InitialConnectionReceiveWindow: 2 << 20,
		MaxConnectionReceiveWindow:     64 << 20,
		Allow0RTT:                      false,
	}
}

// ServerTLS returns the gateway's QUIC TLS configuration: TLS 1.3, the
// tunnel ALPN, and a client certificate required. The chain is verified by
// the gateway after the handshake, against its clock and store, so that a
// refusal can say why (see gateway/internal/relay).
func ServerTLS(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: getCert,
		ClientAuth:     tls.RequireAnyClientCert,
		NextProtos:     []string{wire.ALPN},
	}
}

// ClientTLS adds the tunnel ALPN and the client certificate callback to a
// pinned client configuration (trust.PinnedClientConfig), with TLS session
// resumption: the session tickets of the process's connections are kept
// per server and per client certificate (resume.go), so that a reconnection
// with the same certificate resumes (the gateway still checks the
// certificate, its revocation and the principal's lock) and one with
// another certificate never does.
func ClientTLS(base *tls.Config, getCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) *tls.Config {
	c := base.Clone()
	c.NextProtos = []string{wire.ALPN}
	c.GetClientCertificate = getCert
	c.MinVersion = tls.VersionTLS13
	if getCert != nil {
		cs := &certSessions{getCert: getCert}
		c.GetClientCertificate = cs.certificate
		c.ClientSessionCache = cs
	}
	return c
}
