package doctor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// checkQUIC dials the gateway's UDP port with the tunnel ALPN and no client
// certificate. Any answer from the server proves the port is reachable,
// including the refusal of a handshake without a client certificate; only
// silence (a timeout) or an ICMP refusal do not.
func (r *runner) checkQUIC(ctx context.Context) []Finding {
	const check, id = "quic", "quic.reachable"
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	conf := &tls.Config{ServerName: r.cfg.ServerName, NextProtos: []string{wire.ALPN}, MinVersion: tls.VersionTLS13,
		InsecureSkipVerify: true} //nolint:gosec // reachability only; the certificate is graded on the API
	qc := &quic.Config{HandshakeIdleTimeout: r.cfg.Timeout, MaxIdleTimeout: r.cfg.Timeout}
	// A transport of its own, closed on return: nothing of the probe
	// outlives the check.
	raddr, err := net.ResolveUDPAddr("udp", r.cfg.QUIC)
	if err != nil {
		return []Finding{fail(check, id, C, fmt.Sprintf("QUIC address %s: %v", r.cfg.QUIC, err), "give --quic HOST:PORT")}
	}
	udp, err := net.ListenUDP("udp", nil)
	if err != nil {
		return []Finding{local(warn(check, id, "", fmt.Sprintf("cannot open a UDP socket on this machine: %v", err), "check this machine's limits"))}
	}
	defer udp.Close()
	tr := &quic.Transport{Conn: udp}
	defer tr.Close() // waits for the transport's goroutines
	conn, err := tr.Dial(ctx, raddr, conf, qc)
	if err == nil {
		alpn := conn.ConnectionState().TLS.NegotiatedProtocol
		_ = conn.CloseWithError(0, "tunnel doctor")
		if alpn != wire.ALPN {
			return []Finding{fail(check, id, C, fmt.Sprintf("%s answers QUIC but not with the tunnel protocol (ALPN %q)", r.cfg.QUIC, alpn),
				"check --quic names the gateway's UDP port, not another QUIC service")}
		}
		return []Finding{ok(check, id, fmt.Sprintf("QUIC on %s answers with ALPN %s", r.cfg.QUIC, wire.ALPN))}
	}
	return []Finding{quicFinding(r.cfg.QUIC, err)}
}

// quicFinding reads the error of a QUIC dial.
func quicFinding(addr string, err error) Finding {
	const check, id = "quic", "quic.reachable"
	var te *quic.TransportError
	var ae *quic.ApplicationError
	var idle *quic.IdleTimeoutError
	var hs *quic.HandshakeTimeoutError
	switch {
	case errors.As(err, &te) && te.Remote, errors.As(err, &ae) && ae.Remote:
		// The server spoke QUIC and refused us: without a client
		// certificate, that is what the gateway does.
		return ok(check, id, fmt.Sprintf("QUIC on %s answers (it refused the doctor's anonymous handshake, as it should: %v)", addr, err))
	case errors.As(err, &te) && te.ErrorCode.IsCryptoError():
		return fail(check, id, C, fmt.Sprintf("QUIC on %s answers but the TLS handshake failed: %v", addr, err),
			"check --quic names the gateway's UDP port and that the gateway offers ALPN "+wire.ALPN)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fail(check, id, C, fmt.Sprintf("QUIC on %s is refused: nothing listens on that UDP port", addr),
			"check the gateway's --quic-addr and that --quic (or the API port) names it")
	case errors.As(err, &idle), errors.As(err, &hs), errors.Is(err, context.DeadlineExceeded):
		return warn(check, id, B, fmt.Sprintf("QUIC on %s does not answer (timeout): UDP is filtered on the way, or nothing listens", addr),
			"open the gateway's UDP port in firewalls and security groups; meanwhile clients fall back to QUIC over TCP, which is slower")
	}
	return warn(check, id, B, fmt.Sprintf("QUIC on %s could not be reached: %v", addr, err),
		"open the gateway's UDP port in firewalls; clients fall back to QUIC over TCP meanwhile")
}

// checkUDPBuffers reads this machine's UDP buffer limits: below what QUIC
// asks for, transfers through this machine are slower than they could be.
func (r *runner) checkUDPBuffers(context.Context) []Finding {
	const check = "udp"
	var out []Finding
	for _, name := range []string{"rmem_max", "wmem_max"} {
		id := "udp." + name
		v, err := r.cfg.Sysctl(name)
		switch {
		case err != nil:
			out = append(out, local(info(check, id, fmt.Sprintf("could not read net.core.%s: %v", name, err))))
		case v < transport.WantUDPBuffer:
			out = append(out, local(warn(check, id, "", fmt.Sprintf("net.core.%s on this machine is %d bytes, below the %d QUIC asks for", name, v, transport.WantUDPBuffer),
				fmt.Sprintf("sudo sysctl -w net.core.rmem_max=%d net.core.wmem_max=%d, and persist it in %s (on the gateway and agents too)", transport.WantUDPBuffer, transport.WantUDPBuffer, transport.SysctlFile))))
		default:
			out = append(out, local(ok(check, id, fmt.Sprintf("net.core.%s on this machine is %d bytes", name, v))))
		}
	}
	return out
}
