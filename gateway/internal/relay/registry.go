package relay

import (
	"slices"
	"sync"
	"time"

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
	// proofs: agent → serial → expiry of each certificate the agent
	// proved on a connection, kept while it has a connection here; its
	// connections live until the latest of them (addAgent), less the
	// revoked ones (withdrawProofs).
	proofs map[string]map[string]time.Time
}

// addAgent makes ac the agent's current connection and returns the one it
// replaces (nil if none), now retiring. Every connection of the agent,
// current and retiring, then ends when the latest certificate the agent
// proved on any of them expires (its handshake verified it, as each
// connection's): after a renewal, the retiring connections keep their
// streams as long as the new certificate, not only their own. A lock
// still cuts them all at once (dropAgent).
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
	if ac.life != nil {
		if r.proofs == nil {
			r.proofs = map[string]map[string]time.Time{}
		}
		if r.proofs[ac.name] == nil {
			r.proofs[ac.name] = map[string]time.Time{}
		}
		r.proofs[ac.name][ac.serial] = ac.life.until()
		latest := latestProof(r.proofs[ac.name])
		for _, c := range r.connsOf(ac.name) {
			c.life.extend(latest)
		}
	}
	return old
}

// latestProof returns the latest of the expiries.
func latestProof(proofs map[string]time.Time) time.Time {
	var latest time.Time
	for _, na := range proofs {
		if na.After(latest) {
			latest = na
		}
	}
	return latest
}

// connsOf returns the agent's connections with a life, current and
// retiring. r.mu is held.
func (r *registry) connsOf(name string) []*agentConn {
	var out []*agentConn
	if ac := r.agents[name]; ac != nil && ac.life != nil {
		out = append(out, ac)
	}
	for ac := range r.retiring {
		if ac.name == name && ac.life != nil {
			out = append(out, ac)
		}
	}
	return out
}

// forgetProofs drops the agent's proofs once it has no connection here.
// r.mu is held.
func (r *registry) forgetProofs(name string) {
	if r.agents[name] != nil {
		return
	}
	for ac := range r.retiring {
		if ac.name == name {
			return
		}
	}
	delete(r.proofs, name)
}

// withdrawProofs takes revoked certificates (serials) out of the agents'
// proofs: every connection of theirs opened with another certificate
// then ends when the latest certificate still valid that the agent proved
// expires; at once if that time has passed (a retiring connection whose
// own certificate expired, kept only by a certificate now revoked). The
// connections opened with a revoked certificate are the caller's to close
// (EndCerts).
func (r *registry) withdrawProofs(serials map[string]struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, proofs := range r.proofs {
		withdrawn := false
		for serial := range proofs {
			if _, ok := serials[serial]; ok {
				delete(proofs, serial)
				withdrawn = true
			}
		}
		if !withdrawn {
			continue
		}
		latest := latestProof(proofs)
		for _, ac := range r.connsOf(name) {
			if _, revoked := serials[ac.serial]; !revoked {
				ac.life.set(latest)
			}
		}
	}
}

// retired forgets a replaced connection that closed.
func (r *registry) retired(old *agentConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.retiring, old)
	r.forgetProofs(old.name)
}

// claimRetired forgets a replaced connection that carries no stream any
// more, and reports whether it was still retiring: if so, the caller
// closes it as replaced; if not, dropAgent took it (a lock), and closes
// it with its reason.
func (r *registry) claimRetired(old *agentConn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.retiring[old]
	delete(r.retiring, old)
	r.forgetProofs(old.name)
	return ok
}

// dropConn takes one connection of an agent out at once, current or
// retiring (its certificate was revoked: EndCerts): no new stream reaches
// it, and the caller closes it with its reason (the retiring goroutine no
// longer closes it as merely replaced).
func (r *registry) dropConn(ac *agentConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.agents[ac.name] == ac {
		delete(r.agents, ac.name)
	}
	delete(r.retiring, ac)
}

// removeAgent forgets ac if it is still the agent's current connection.
func (r *registry) removeAgent(ac *agentConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.agents[ac.name] == ac {
		delete(r.agents, ac.name)
	}
	r.forgetProofs(ac.name)
}

// dropAgent takes the agent out at once (no new stream reaches it) and
// returns all its connections, current and retiring, for the caller to
// close (the retiring ones are no longer closed as merely replaced).
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
			delete(r.retiring, ac)
		}
	}
	delete(r.proofs, name)
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
		a := api.Agent{Name: name, Online: true, Since: &since, Direct: "off", TrustEpoch: ac.trustEpoch.Load()}
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
