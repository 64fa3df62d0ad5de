package jumphost

import (
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/identity"
)

// FuzzDirectTCPIP: the direct-tcpip payload comes from any authenticated
// client. Parsing never panics, and what it accepts is a valid node name
// asked for on port 22.
func FuzzDirectTCPIP(f *testing.F) {
	for _, r := range []directTCPIPRequest{
		{Host: "web-1", Port: 22, OriginHost: "127.0.0.1", OriginPort: 5555},
		{Host: "web-1.prod", Port: 22},
		{Host: "WEB-1.PROD", Port: 22},
		{Host: "web-1.prod.prod", Port: 22},
		{Host: "web-1", Port: 80},
		{Host: "", Port: 22},
		{Host: ".prod", Port: 22},
		{Host: "web-1\x00", Port: 22},
		{Host: strings.Repeat("a", 70), Port: 22},
	} {
		f.Add(gossh.Marshal(r))
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, payload []byte) {
		node, err := parseDirectTCPIP(payload, cluster)
		if err != nil {
			if node != "" {
				t.Errorf("error %v with node %q", err, node)
			}
			return
		}
		if err := identity.ValidateName("node", node); err != nil {
			t.Errorf("accepted an invalid node name %q: %v", node, err)
		}
		var req directTCPIPRequest
		if err := gossh.Unmarshal(payload, &req); err != nil || req.Port != 22 {
			t.Errorf("accepted %q (port %d, %v); want only port 22", node, req.Port, err)
		}
		if want := strings.TrimSuffix(identity.CanonicalName(req.Host), "."+cluster); node != want {
			t.Errorf("node %q from host %q; want %q", node, req.Host, want)
		}
	})
}
