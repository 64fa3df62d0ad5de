package jumphost

import "github.com/tunnelhq/tunnel/pkg/store"

// reasonCertRevoked is why a connection closed by EndCerts was revoked.
const reasonCertRevoked = "the certificate of this connection was revoked"

// EndCerts closes every jump connection here authenticated with one of the
// SSH user certificates revoked names (other kinds are ignored), after
// the grace that lets the nodes' messages through it, as EndUser does;
// none of them opens a new channel from now on. It returns how many it
// revoked. The fan-out of revocations made on other gateways calls it
// (gateway/fanout.go), as does the reconciliation sweep with the whole
// deny list.
func (j *Server) EndCerts(revoked []store.IssuedCert) int {
	serials := map[string]struct{}{}
	for _, c := range revoked {
		if c.Kind == store.CertSSHUser && c.Serial != "" {
			serials[c.Serial] = struct{}{}
		}
	}
	if len(serials) == 0 {
		return 0
	}
	j.mu.Lock()
	cs := make([]*conn, 0, len(j.conns))
	for c := range j.conns {
		cs = append(cs, c)
	}
	j.mu.Unlock()
	n := 0
	for _, c := range cs {
		w, _ := c.identity()
		if w == nil {
			continue
		}
		if _, ok := serials[w.serial]; !ok {
			continue
		}
		c.revoke(reasonCertRevoked, revokeGrace)
		j.log().Info("closing a jump connection: its certificate was revoked", "user", w.user.Name, "serial", w.serial)
		n++
	}
	return n
}
