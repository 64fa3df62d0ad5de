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
	defer func() { early.drop() }()
	// The gateway decides first; the client's bytes wait (they may go
	// another way than this stream).
	err = wire.WriteHeader(lease, wire.Header{Kind: wire.KindDial, Target: f.Target, Direct: wire.DirectOffer, Ticket: ticket})
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
	switch {
	case err != nil:
		log.Warn("open stream", "target", f.Target, "err", err)
		local.Abort()
		leaseEnd.Abort()
		return
	case rep.Status == wire.StatusOK:
		// The gateway relays this one (the target cannot take the direct
		// path): the reply is the target's, the stream is the data path.
		// What was offered ahead is dropped now, not when this ends.
		pre.discard()
		early.drop()
		early = nil
		stop := context.AfterFunc(ctx, func() { leaseEnd.Abort(); local.Abort() })
		defer stop()
		transport.Splice(local, leaseEnd)
		return
	case rep.Status != wire.StatusDirect:
		log.Warn("connection refused", "target", f.Target, "reason", rep.Err().Error())
		local.Abort()
		_ = lease.Close()
		lease.CancelRead(transport.StreamCanceled)
		return
	}
	if a.carryTCP(ctx, f, local, lease, node, service, grant, pre, log) {
		return
	}
	var (
		ps      *quic.Stream
		release func()
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
