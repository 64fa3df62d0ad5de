package access

import (
	"context"
	"strings"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/policy"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// Visible returns the nodes u sees (tunnel ls, GET /v1/nodes), with the
// services on each that u may reach. Admins see every node and service. A
// node is listed when u's roles name it (Nodes) or allow one of its
// services. Services are known only while the node's agent is connected
// (online), so an offline node is listed, without services, when a
// service pattern of u's roles could match it.
func (d *Decider) Visible(ctx context.Context, u store.User, admin bool, agents []store.Agent, online map[string]api.Agent) ([]api.Node, error) {
	rs, err := d.roles(ctx, d.Store, u, d.now())
	if err != nil {
		return nil, err
	}
	var nodePatterns, servicePatterns []string
	for _, r := range rs {
		nodePatterns = append(nodePatterns, r.Nodes...)
		servicePatterns = append(servicePatterns, r.Services...)
	}
	out := []api.Node{}
	for _, a := range agents {
		p := online[a.Name]
		n := api.Node{Name: a.Name, Online: p.Online, Services: []string{}}
		for _, sv := range p.Services {
			if admin || policy.AllowedByPatterns(servicePatterns, a.Name, sv) {
				n.Services = append(n.Services, sv)
			}
		}
		visible := admin || len(n.Services) > 0 || matchesAny(nodePatterns, a.Name) ||
			!p.Online && matchesNodeOf(servicePatterns, a.Name)
		if visible {
			out = append(out, n)
		}
	}
	return out, nil
}

// matchesNodeOf reports whether the node part of any "node/service"
// pattern matches node.
func matchesNodeOf(patterns []string, node string) bool {
	for _, p := range patterns {
		if n, _, ok := strings.Cut(p, "/"); ok && policy.Match(n, node) {
			return true
		}
	}
	return false
}
