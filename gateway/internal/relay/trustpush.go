package relay

import (
	"errors"
	"sync"
	"time"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/login"
	"github.com/tunnelhq/tunnel/pkg/panics"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// The trust bundle over live connections (docs/CA-ROTATION.md): when the
// gateway's CA keys change (a rotation step, made on any gateway of the
// cluster: every gateway reloads them), PushTrust sends every agent
// connected to this gateway the bundle the gateway now hands out at
// enrolment and renewal, as a wire.MsgTrust on the agent's control
// stream. The agent checks it, saves it and applies it at once, instead of
// at its next renewal.
//
// Order: the bundle is read while the agent's control stream is held
// (sendTrust), so that of two pushes to one agent the later one carries
// keys at least as new, whichever goroutine runs first.

// trustSenders bounds the agents a push writes to at once: one that does
// not read its control stream holds a sender for transport.HeaderTimeout.
const trustSenders = 32

// TrustBundle returns the cluster's trust bundle as ca has it now, as a
// control message.
func TrustBundle(ca *certs.Authority) wire.Control {
	b := login.CABundle(ca)
	return wire.Control{Type: wire.MsgTrust, Trust: &b}
}

// PushTrust sends every agent connected now the current trust bundle, if
// the CA keys changed since the last push (whoever reloaded them: the
// fan-out of a change, or the admin API answering a rotation step), in
// the background (a goroutine that Serve waits for); it returns at once.
// Failures are logged: an agent that misses it gets the bundle with its
// next certificate.
func (s *Server) PushTrust() {
	if s.CA == nil {
		return
	}
	gen := s.CA.Generation()
	if old := s.trustGen.Load(); old == gen || !s.trustGen.CompareAndSwap(old, gen) {
		return
	}
	var agents []*agentConn
	for name := range s.reg.online() {
		if ac := s.reg.agent(name); ac != nil {
			agents = append(agents, ac)
		}
	}
	if len(agents) == 0 {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer panics.Recover(s.log(), "trust bundle push", nil)
		s.pushTrust(agents)
	}()
}

// pushTrust sends the bundle to agents, trustSenders at a time, and logs
// the outcome.
func (s *Server) pushTrust(agents []*agentConn) {
	bundle := &trustCache{ca: s.CA}
	work := make(chan *agentConn)
	var (
		mu     sync.Mutex
		sent   int
		failed []string
		wg     sync.WaitGroup
	)
	for range min(trustSenders, len(agents)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ac := range work {
				err := s.sendTrustGuarded(ac, bundle)
				mu.Lock()
				if err != nil {
					failed = append(failed, ac.name)
					s.log().Debug("send the trust bundle to an agent", "agent", ac.name, "err", err)
				} else {
					sent++
				}
				mu.Unlock()
			}
		}()
	}
	for _, ac := range agents {
		work <- ac
	}
	close(work)
	wg.Wait()
	if len(failed) > 0 {
		s.log().Warn("the new trust bundle did not reach some agents; they get it with their next certificate",
			"sent", sent, "failed", len(failed), "first_failed", failed[0])
		return
	}
	s.log().Info("trust bundle sent to the connected agents", "agents", sent)
}

// sendTrustGuarded is sendTrust with a panic recovered: that agent's
// connection is closed, the push goes on.
func (s *Server) sendTrustGuarded(ac *agentConn, bundle *trustCache) (err error) {
	err = errPanicked
	defer panics.Recover(s.log(), "trust bundle to agent "+ac.name, closeOnPanic(ac.conn))
	return s.sendTrust(ac, bundle)
}

var errPanicked = errors.New("internal error")

// sendTrust writes the bundle on ac's control stream. The bundle is read
// while the stream is held: see the ordering note above.
func (s *Server) sendTrust(ac *agentConn, bundle *trustCache) error {
	ac.ctlMu.Lock()
	defer ac.ctlMu.Unlock()
	if err := ac.conn.Context().Err(); err != nil {
		return errors.New("disconnected")
	}
	_ = ac.ctl.SetWriteDeadline(time.Now().Add(transport.HeaderTimeout))
	defer ac.ctl.SetWriteDeadline(time.Time{})
	return wire.WriteControl(ac.ctl, bundle.current())
}

// trustCache builds the bundle once per generation of the CA keys.
type trustCache struct {
	ca  *certs.Authority
	mu  sync.Mutex
	gen uint64
	msg *wire.Control
}

// current returns the bundle of the CA keys in use now.
func (c *trustCache) current() wire.Control {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen := c.ca.Generation(); c.msg == nil || gen != c.gen {
		m := TrustBundle(c.ca)
		c.gen, c.msg = gen, &m
	}
	return *c.msg
}

// trustOnConnect sends an agent that has just connected the trust bundle
// while a rotation is under way (some kind has more than one CA key): it
// may have missed the push of the step (it was not connected then), and
// its saved bundle predates it. Outside a rotation its bundle is the one
// it got with its certificate.
func (s *Server) trustOnConnect(ac *agentConn) {
	if s.CA == nil || len(s.CA.X509CAs()) < 2 && len(s.CA.SSHUserCAs()) < 2 && len(s.CA.SSHHostCAs()) < 2 {
		return
	}
	if err := s.sendTrustGuarded(ac, &trustCache{ca: s.CA}); err != nil {
		s.log().Debug("send the trust bundle to an agent that connected during a rotation", "agent", ac.name, "err", err)
	}
}
