package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// carry carries a local listener's connection: offered to the direct
// path when it may be used (see peers.go), through the relay otherwise.
// A grant decided ahead for the target (ahead.go) starts it at once.
func (a *Agent) carry(ctx context.Context, f *transport.Forwarder, local transport.TCP) {
	node, service, _ := strings.Cut(f.Target, "/")
	if !a.cfg.File.DirectOn() || !a.gwDirect.Load() || !a.peers.usable(node) {
		f.Relay(ctx, local)
		return
	}
	log := f.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if g := a.peers.ahead.take(f.Target); g != nil {
		pre := a.preDialTCP(ctx, node, service, g.grant.Ticket)
		defer pre.discard()
		var early *peerOffer
		if pre == nil {
			early = a.peers.offer(node, service, g.grant.Ticket)
		}
		a.peers.ahead.ask(f.Target)
		a.carryGranted(ctx, f, local, g.lease, node, service, g.grant, pre, early, log)
		return
	}
	octx, cancel := context.WithTimeout(ctx, transport.HeaderTimeout)
	lease, err := a.OpenStream(octx)
	cancel()
	if err != nil {
		log.Warn("cannot reach the gateway; connection refused", "target", f.Target, "err", err)
		local.Abort()
		return
	}
	leaseEnd := transport.Stream{Stream: lease}
	// The ticket this agent proposes for the stream: a TCP connection
	// to the node, if it has one, comes up meanwhile and offers the
	// stream under it, so the target has it when the gateway's
	// announcement comes (peertcp.go).
	ticket := wire.NewTicket()
	pre := a.preDialTCP(ctx, node, service, ticket)
	defer pre.discard()
	// Or, when TCP is not tried, a stream of the live QUIC peer link.
	var early *peerOffer
	if pre == nil {
		early = a.peers.offer(node, service, ticket)
	}
	// The gateway decides first; the client's bytes wait (they may go
	// another way than this stream).
	rep, grant, err := askDirect(lease, f.Target, node, wire.DirectOffer, ticket)
	switch {
	case err != nil:
		log.Warn("open stream", "target", f.Target, "err", err)
		early.drop()
		local.Abort()
		leaseEnd.Abort()
		return
	case rep.Status == wire.StatusOK:
		// The gateway relays this one (the target cannot take the direct
		// path): the reply is the target's, the stream is the data path.
		// What was offered ahead is dropped now, not when this ends.
		pre.discard()
		early.drop()
		stop := context.AfterFunc(ctx, func() { leaseEnd.Abort(); local.Abort() })
		defer stop()
		transport.Splice(local, leaseEnd)
		return
	case rep.Status != wire.StatusDirect:
		log.Warn("connection refused", "target", f.Target, "reason", rep.Err().Error())
		early.drop()
		local.Abort()
		_ = lease.Close()
		lease.CancelRead(transport.StreamCanceled)
		return
	}
	// The target's next stream is decided while this one runs.
	a.peers.ahead.ask(f.Target)
	a.carryGranted(ctx, f, local, lease, node, service, grant, pre, early, log)
}

// askDirect sends the dial header of a stream to target (on node) that
// offers the direct path (direct: wire.DirectOffer or wire.DirectAhead)
// on lease, and reads the gateway's reply and, for StatusDirect, its
// grant (checked against the request).
func askDirect(lease *quic.Stream, target, node, direct, ticket string) (wire.Reply, wire.Control, error) {
	err := wire.WriteHeader(lease, wire.Header{Kind: wire.KindDial, Target: target, Direct: direct, Ticket: ticket})
	var rep wire.Reply
	if err == nil {
		_ = lease.SetReadDeadline(time.Now().Add(transport.HeaderTimeout))
		rep, err = wire.ReadReply(lease)
	}
	var grant wire.Control
	if err == nil && rep.Status == wire.StatusDirect {
		grant, err = wire.ReadControl(lease)
		if err == nil && (grant.Type != wire.MsgDirect || grant.Ticket == "" || grant.Node != node) {
			err = errors.New("the gateway's direct grant does not match the request")
		}
	}
	_ = lease.SetReadDeadline(time.Time{})
	return rep, grant, err
}

// carryGranted carries local's direct stream, granted on lease: over TCP
// if it may (carryTCP), else on the QUIC peer link (on early, the stream
// offered ahead under the grant's ticket, if it is not nil), else
// through the relay if the direct path fails before any byte went out.
func (a *Agent) carryGranted(ctx context.Context, f *transport.Forwarder, local transport.TCP, lease *quic.Stream,
	node, service string, grant wire.Control, pre *tcpPreDial, early *peerOffer, log *slog.Logger) {
	defer func() { early.drop() }()
	if a.carryTCP(ctx, f, local, lease, node, service, grant, pre, log) {
		return
	}
	var (
		ps      *quic.Stream
		release func()
		err     error
	)
	if early != nil && early.ticket == grant.Ticket {
		ps, release = early.st, early.release
		early = nil
	} else {
		// No offer ahead, or one under another ticket (a gateway that
		// does not take proposed tickets).
		early.drop()
		early = nil
		ps, release, err = a.peers.open(ctx, node, grant.Addrs)
		if err == nil {
			if err = wire.WriteHeader(ps, wire.Header{Kind: wire.KindPeer, Target: service, Ticket: grant.Ticket}); err != nil {
				transport.Stream{Stream: ps}.Abort()
				release()
			}
		}
	}
	if err != nil {
		// Nothing of the client's went out yet: the relay takes it.
		log.Info("direct path unavailable; going through the gateway", "target", f.Target, "addrs", grant.Addrs, "err", err)
		a.peers.fail(node)
		_ = lease.Close()
		lease.CancelRead(transport.StreamCanceled)
		f.Relay(ctx, local)
		return
	}
	defer release()
	log.Debug("direct stream", "target", f.Target)
	remote := transport.Stream{Stream: ps}
	// The lease: the gateway resets it to cut this stream (revocation,
	// lock, access change), with the code both sides are reset with. Its
	// connection ending (the gateway gone) does not end the stream.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, err := io.Copy(io.Discard, io.LimitReader(lease, 1<<16))
		var se *quic.StreamError
		if errors.As(err, &se) && se.Remote {
			reason, _ := wire.CutReason(uint64(se.ErrorCode))
			log.Info("direct stream cut by the gateway", "target", f.Target, "reason", reason)
			ps.CancelWrite(se.ErrorCode)
			ps.CancelRead(se.ErrorCode)
			local.Abort()
		}
	}()
	stop := context.AfterFunc(ctx, func() { remote.Abort(); local.Abort() })
	transport.Splice(local, transport.AwaitReply(ps, f.Target, log))
	stop()
	_ = lease.Close()
	lease.CancelRead(transport.StreamCanceled)
	wg.Wait()
}
