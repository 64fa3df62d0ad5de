package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

// failKind classifies why the agent could not connect to the gateway.
type failKind int

const (
	failOther      failKind = iota
	failDNS                 // the gateway's host name does not resolve
	failNoAnswer            // no answer over UDP (QUIC) in time
	failUDPBlocked          // ... but the gateway's TCP port answers
	failTLS                 // the gateway is not the pinned cluster's
	failRefused             // the gateway refused this agent's certificate
	failLocked              // ... because an administrator locked the agent
	failBusy                // the gateway sets up too many connections now: retry later
)

// connectError is why a connection to the gateway failed, in one sentence
// that says what failed and what to check. Its message is what the agent
// logs; the cause stays wrapped.
type connectError struct {
	kind failKind
	msg  string
	// detail is the gateway's own words, when it gave a reason.
	detail string
	err    error
}

func (e *connectError) Error() string { return e.msg }
func (e *connectError) Unwrap() error { return e.err }

// afterHandshake marks an error that came once the QUIC handshake had
// succeeded (during the hello), as opposed to one of the handshake.
type afterHandshake struct{ err error }

func (e *afterHandshake) Error() string { return e.err.Error() }
func (e *afterHandshake) Unwrap() error { return e.err }

// tcpProbeTimeout bounds the TCP probe that tells "UDP blocked" from
// "nothing there" after a QUIC handshake got no answer.
const tcpProbeTimeout = 3 * time.Second

// probeTCP reports whether something accepts TCP connections at addr, as
// a gateway's API (TLS) does: a server that speaks first, as an SSH server
// does with its banner, is not one (a notGateway error).
func probeTCP(addr string) error {
	c, err := net.DialTimeout("tcp", addr, tcpProbeTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	// A TLS server waits for the client's hello: listen briefly for a
	// server that does not.
	_ = c.SetReadDeadline(time.Now().Add(tcpProbeListen))
	buf := make([]byte, 64)
	n, _ := c.Read(buf)
	switch {
	case n == 0:
		return nil
	case bytes.HasPrefix(buf[:n], []byte("SSH-")):
		return &notGateway{what: "an SSH server"}
	}
	return &notGateway{what: "a server that speaks first"}
}

// tcpProbeListen is how long probeTCP listens for a server that speaks
// first.
const tcpProbeListen = 300 * time.Millisecond

// notGateway is probeTCP's answer for a TCP port that is not a gateway's.
type notGateway struct{ what string }

func (e *notGateway) Error() string { return "the TCP port is " + e.what + ", not a tunnel gateway" }

// errRestarting is what keep's probe says instead of probing TCP when the
// agent's connection over UDP to the gateway ended less than restartGrace
// ago with the gateway restarting: a timeout then is a gateway too busy to
// answer (every agent coming back at once), not a firewall, and must not
// move the agent to QUIC over TCP.
var errRestarting = errors.New("the gateway restarted lately")

// restartGrace is how long after a gateway's restart a timeout does not
// count as blocked UDP, and the agent waits restartHandshakeTimeout for
// the gateway's answer rather than transport.HandshakeTimeout.
const (
	restartGrace            = time.Minute // explainConnect says "a minute"
	restartHandshakeTimeout = 30 * time.Second
)

// dialTimeout is a handshake that did not finish within after.
type dialTimeout struct {
	after time.Duration
	err   error
}

func (e *dialTimeout) Error() string { return e.err.Error() }
func (e *dialTimeout) Unwrap() error { return e.err }

// explainConnect classifies err, the failure to connect to gateway
// (HOST:PORT), and says it in words a person can act on. probe, if not nil,
// is used after a timeout to see whether the gateway's TCP port answers.
func explainConnect(err error, gateway string, probe func(string) error) *connectError {
	var ce *connectError
	if errors.As(err, &ce) {
		return ce
	}
	host, port, serr := net.SplitHostPort(gateway)
	if serr != nil {
		host, port = gateway, "?"
	}
	wrap := func(kind failKind, format string, a ...any) *connectError {
		return &connectError{kind: kind, msg: fmt.Sprintf(format, a...), err: err}
	}

	var dnsErr *net.DNSError
	var appErr *quic.ApplicationError
	var trErr *quic.TransportError
	var hsTimeout *quic.HandshakeTimeoutError
	var idle *quic.IdleTimeoutError
	var after *afterHandshake
	isAfter := errors.As(err, &after)
	switch {
	case errors.As(err, &dnsErr):
		what := dnsErr.Err
		if dnsErr.IsNotFound {
			what = "no such host"
		}
		return wrap(failDNS, "cannot resolve the gateway's host %s (%s): check --gateway and this machine's DNS", host, what)

	case errors.As(err, &appErr) && appErr.Remote:
		return explainClose(appErr, err)

	case errors.Is(err, trust.ErrPinMismatch):
		return wrap(failTLS, "the gateway at %s does not present the cluster CA this agent trusts (wrong --ca-pin, or another gateway at this address): check --gateway and --ca-pin against what tunnel-gateway init printed", gateway)

	case errors.As(err, &trErr) && trErr.Remote && trErr.ErrorCode == quic.ConnectionRefused:
		// Refused at the first packet, before the handshake: the gateway
		// sets up as many connections as it may at once (a restart, with
		// every agent coming back), or as many as it takes from this
		// address. The backoff spreads the retries.
		return wrap(failBusy, "the gateway at %s is busy: it refused this connection for now (it sets up only so many at once, from everyone and from this address; if this lasts, its network rules may refuse this address: tunnel admin network ls); retrying with backoff", gateway)

	case errors.As(err, &trErr) && trErr.Remote:
		return wrap(failOther, "the gateway at %s refused the QUIC handshake (%s): is it a tunnel gateway of a compatible version?", gateway, trErr.ErrorMessage)

	case errors.As(err, &trErr) && trErr.ErrorCode >= 0x100 && trErr.ErrorCode < 0x200:
		// A TLS failure on our side, other than the pin: the certificate
		// does not fit the address, or is not valid at this machine's time.
		return wrap(failTLS, "the gateway's TLS certificate is not acceptable (%s): check --gateway (the name must be one the gateway's certificate carries) and this machine's clock", trErr.Error())

	case isAfter && isTimeout(err):
		return wrap(failOther, "the gateway at %s accepted the connection but did not answer the agent's hello within %s: check the gateway's log", gateway, welcomeTimeout)

	case errors.As(err, &hsTimeout), errors.As(err, &idle) && !isAfter, errors.Is(err, context.DeadlineExceeded) && !isAfter:
		wait := transport.HandshakeTimeout
		var dt *dialTimeout
		if errors.As(err, &dt) {
			wait = dt.after
		}
		base := fmt.Sprintf("no answer from the gateway at %s over UDP within %s", gateway, wait)
		var perr error = errors.New("not probed")
		if probe != nil {
			perr = probe(gateway)
		}
		var ng *notGateway
		switch {
		case errors.As(perr, &ng):
			return wrap(failOther, "%s, and its TCP port answers as %s, not a tunnel gateway: check --gateway (a gateway's address is its --api-addr, :8443 by default; the jump host's SSH port is another)", base, ng.what)
		case errors.Is(perr, errRestarting):
			// Not a firewall: the gateway restarted a moment ago, over
			// UDP. It is most likely taking back all its agents at once,
			// and could not answer this one's first packets in time.
			return wrap(failBusy, "%s, less than a minute after it restarted: it is most likely busy taking its agents back; retrying with backoff", base)
		case perr == nil:
			return wrap(failUDPBlocked, "%s, yet its TCP port answers: UDP to %s is probably blocked; open UDP port %s in the firewalls between this machine and the gateway", base, gateway, port)
		case errors.Is(perr, syscall.ECONNREFUSED):
			return wrap(failNoAnswer, "%s, and nothing listens on TCP port %s there either: check that tunnel-gateway is running on %s and that --gateway %s is its address (UDP to %s may also be blocked by a firewall)", base, port, host, gateway, gateway)
		default:
			return wrap(failNoAnswer, "%s: UDP to %s may be blocked; check the firewalls for UDP port %s (the gateway's QUIC port, the same number as its API port) and that tunnel-gateway is running there", base, gateway, port)
		}

	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return wrap(failNoAnswer, "cannot reach the gateway at %s: no route to it from this machine (%v); check the network and --gateway", gateway, err)
	}
	var ae *net.AddrError
	if errors.As(err, &ae) {
		return wrap(failOther, "the gateway address %s is not usable (%v): give --gateway HOST:PORT", gateway, ae)
	}
	return wrap(failOther, "cannot connect to the gateway at %s: %v", gateway, err)
}

// explainClose classifies the gateway closing the connection (a refusal
// right after the handshake, or the end of a working connection).
func explainClose(appErr *quic.ApplicationError, err error) *connectError {
	reason := strings.TrimSpace(appErr.ErrorMessage)
	if reason == "" {
		reason = fmt.Sprintf("code %#x", uint64(appErr.ErrorCode))
	}
	wrap := func(kind failKind, format string, a ...any) *connectError {
		return &connectError{kind: kind, msg: fmt.Sprintf(format, a...), err: err}
	}
	switch appErr.ErrorCode {
	case transport.CodeUnauthorized, transport.CodeRevoked:
		if strings.Contains(strings.ToLower(reason), "locked") {
			ce := wrap(failLocked, "the gateway refuses this agent: locked by an administrator; retrying until it is unlocked")
			ce.detail = reason
			return ce
		}
		if appErr.ErrorCode == transport.CodeRevoked {
			return wrap(failRefused, "the gateway cut this agent's connection: %s", reason)
		}
		if strings.Contains(reason, "not issued by this cluster") {
			// The cluster's CA changed under this agent (a CA rotation
			// finished with --force while it was away, or another
			// cluster at this address): only a new enrolment helps.
			return wrap(failRefused, "the gateway refuses this agent's certificate: %s; if the cluster's CA was rotated while this agent was away, enrol it again: stop it, remove %s from its --data-dir, and start it with a new --token", reason, IdentityFile)
		}
		return wrap(failRefused, "the gateway refuses this agent's certificate: %s", reason)
	case transport.CodeReplaced:
		return wrap(failOther, "the gateway closed this connection: %s (is another tunnel-agent running with a copy of this data directory?)", reason)
	case transport.CodeShutdown:
		if strings.Contains(reason, "shutting down") {
			return wrap(failOther, "%s", reason)
		}
		return wrap(failOther, "the gateway is shutting down (%s)", reason)
	}
	return wrap(failOther, "the gateway closed the connection: %s", reason)
}

// isTimeout reports whether err is a deadline or timeout.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}
