package cli

import (
	"crypto/tls"
	"fmt"
	"net"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

// gatewayConns is a lazy QUIC connection to each of the profile's
// gateways, with the login certificate, behind one opener that uses the
// first that answers and moves new streams to the next when its gateway
// dies (transport.Failover).
type gatewayConns struct {
	*transport.Failover
	conns []*transport.LazyConn
}

func dialGateways(p profile.Profile, cert *tls.Certificate) (*gatewayConns, error) {
	pin, err := trust.ParsePin(p.CAPin)
	if err != nil {
		return nil, err
	}
	g := &gatewayConns{Failover: &transport.Failover{}}
	for _, addr := range p.Gateways() {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("gateway address %q in your profile: %w", addr, err)
		}
		// With TLS session resumption (ClientTLS): a command that connects
		// again (tunnel proxy after its gateway restarted) resumes, and the
		// gateway checks the certificate exactly as on a full handshake.
		tlsConf := transport.ClientTLS(trust.PinnedClientConfig(pin, host, nil),
			func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil })
		c := &transport.LazyConn{Addr: addr, TLS: tlsConf}
		g.conns = append(g.conns, c)
		g.Openers = append(g.Openers, c)
	}
	if len(g.conns) == 0 {
		return nil, fmt.Errorf("your profile names no gateway: run tunnel login --gateway HOST:PORT")
	}
	return g, nil
}

// onEnded has f told the cause each time a connection to a gateway ends
// (see transport.LazyConn.Ended); before the first stream.
func (g *gatewayConns) onEnded(f func(error)) {
	for _, c := range g.conns {
		c.Ended = f
	}
}

// Close closes every connection. Safe to call twice.
func (g *gatewayConns) Close() error {
	for _, c := range g.conns {
		c.Close()
	}
	return nil
}
