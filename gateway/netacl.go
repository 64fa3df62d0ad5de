package gateway

import (
	"context"
	"fmt"

	"github.com/tunnelhq/tunnel/gateway/internal/apiserver"
)

// Network rules (docs/NETWORK.md). The gateway holds one netguard.ACL
// (g.acl) in front of its listeners: the API's and the jump host's TCP
// listeners reset a refused source's connection as they accept it, and
// both QUIC transports (UDP, and QUIC over TCP) refuse it before the
// handshake. applyNetwork reads the rules from the store and swaps them
// in; it runs at start (a gateway that cannot read its rules does not
// start: it would admit what they refuse), after every change made
// through this gateway's API, on every ChangeNetwork from another gateway
// and at every reconciliation (fanout.go).
//
// Live connections from a source the new rules refuse are cut: every TCP
// connection the ACL's listeners admitted (API requests, jump host SSH
// connections and their sessions, QUIC over TCP) at once, and every QUIC
// connection whose owner registered a cut with netguard.CutOnDeny.

// applyNetwork installs the store's network rules on this gateway.
func (g *Gateway) applyNetwork(ctx context.Context) error {
	rules, err := g.store.ListNetworkRules(ctx)
	if err != nil {
		return fmt.Errorf("read the network rules: %w", storeError(err))
	}
	if cut := g.acl.Set(apiserver.ACLRules(rules)); cut > 0 {
		g.cfg.Log.Info("network rules applied; cut live connections from sources they refuse", "rules", len(rules), "cut", cut)
	} else {
		g.cfg.Log.Debug("network rules applied", "rules", len(rules))
	}
	return nil
}
