package relay

import (
	"slices"
	"sync"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// registry is who is connected: the agents (the current connection of
// each, and replaced ones draining) and the users' connections. It has its
// own lock, independent of the live-stream tracker's.
type registry struct {
	mu        sync.Mutex // guards the fields below
	agents    map[string]*agentConn
	retiring  map[*agentConn]struct{} // replaced after a renewal, draining
	userConns map[string]map[*quic.Conn]struct{}
}

// addAgent makes ac the agent's current connection and returns the one it
// replaces (nil if none), now retiring.
func (r *registry) addAgent(ac *agentConn) (old *agentConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.agents == nil {
		r.agents = map[string]*agentConn{}
	}
	old = r.agents[ac.name]
	r.agents[ac.name] = ac
	if old != nil {
		if r.retiring == nil {
			r.retiring = map[*agentConn]struct{}{}
		}
		r.retiring[old] = struct{}{}
	}
	return old
}

// retired forgets a replaced connection that closed.
func (r *registry) retired(old *agentConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.retiring, old)
}

// removeAgent forgets ac if it is still the agent's current connection.
func (r *registry) removeAgent(ac *agentConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.agents[ac.name] == ac {
		delete(r.agents, ac.name)
	}
}

// dropAgent takes the agent out at once (no new stream reaches it) and
// returns all its connections, current and retiring.
func (r *registry) dropAgent(name string) []*quic.Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	var conns []*quic.Conn
	if ac := r.agents[name]; ac != nil {
		delete(r.agents, name)
		conns = append(conns, ac.conn)
	}
	for ac := range r.retiring {
		if ac.name == name {
			conns = append(conns, ac.conn)
		}
	}
	return conns
}

// agent returns the current connection of node's agent, nil if none.
func (r *registry) agent(node string) *agentConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.agents[node]
}

// setServices records an agent's catalogue update.
func (r *registry) setServices(ac *agentConn, svcs []wire.Service) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ac.services = svcs
}

// online lists the connected agents, since when, with their services.
func (r *registry) online() map[string]api.Agent {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]api.Agent, len(r.agents))
	for name, ac := range r.agents {
		since := ac.since
		a := api.Agent{Name: name, Online: true, Since: &since, Direct: "off"}
		if ac.direct {
			a.Direct = "on"
		}
		for _, sv := range ac.services {
			a.Services = append(a.Services, sv.Name)
		}
		slices.Sort(a.Services)
		out[name] = a
	}
	return out
}

// addUserConn records a user's connection; the returned func forgets it.
func (r *registry) addUserConn(user string, c *quic.Conn) func() {
	r.mu.Lock()
	if r.userConns == nil {
		r.userConns = map[string]map[*quic.Conn]struct{}{}
	}
	if r.userConns[user] == nil {
		r.userConns[user] = map[*quic.Conn]struct{}{}
	}
	r.userConns[user][c] = struct{}{}
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.userConns[user], c)
		if len(r.userConns[user]) == 0 {
			delete(r.userConns, user)
		}
	}
}

// userConnsOf returns the user's connections.
func (r *registry) userConnsOf(user string) []*quic.Conn {
	r.mu.Lock()
	defer r.mu.Unlock()
	var conns []*quic.Conn
	for c := range r.userConns[user] {
		conns = append(conns, c)
	}
	return conns
}
