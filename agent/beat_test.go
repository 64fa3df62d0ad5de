package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/transport/transporttest"
)

// killableGateway is a fake gateway on a quic.Transport with a stateless
// reset key, as the real one (gateway/server.go), on addr.
func killableGateway(t *testing.T, ca *certs.Authority, addr string, key *quic.StatelessResetKey) (*fakeGateway, *transporttest.MutedConn, *quic.Transport) {
	t.Helper()
	conn := transporttest.Listen(t, addr)
	tr := &quic.Transport{Conn: conn, StatelessResetKey: key}
	t.Cleanup(func() { tr.Close() })
	ln, err := tr.Listen(fakeGatewayTLS(t, ca), transport.QUICConfig())
	if err != nil {
		t.Fatal(err)
	}
	return serveFakeGateway(t, ca, ln), conn, tr
}

// A gateway killed without a word and restarted on the same address with
// its stateless reset key, a few seconds later, is noticed by the stateless reset that answers
// the agent's heartbeat, not at the idle timeout: an idle agent's QUIC
// keepalives are too small to be answered with a reset. The agent then
// reconnects to the new process.
func TestHeartbeatNoticesARestartedGateway(t *testing.T) {
	ca := newCA(t, "prod")
	var key quic.StatelessResetKey
	copy(key[:], "a gateway's persistent reset key")
	g1, conn1, tr1 := killableGateway(t, ca, "127.0.0.1:0", &key)
	addr := conn1.LocalAddr().String()
	a, logs := testAgent(t, ca, addr)
	a.beat = 100 * time.Millisecond
	runConnect(t, a)
	waitUntil(t, "the agent to connect", func() bool { return g1.welcomed.Load() == 1 })

	// SIGKILL: the process stops answering, its socket closes, and a new
	// process takes the same port and key.
	// The new process listens only after 5.5 s: by then an idle agent
	// without heartbeats has sent its last keepalive probe before its
	// idle timeout (quic-go backs off its probes: a keepalive 2 s after
	// the last packet heard, then probes about 2.03, 2.08, ... 3.6 and
	// 5.3 s after it, the next one too late), so only a heartbeat can meet
	// the reset.
	conn1.Kill()
	killedAt := time.Now()
	time.Sleep(5500 * time.Millisecond)
	tr1.Close()
	conn1.PacketConn.Close()
	g2, _, _ := killableGateway(t, ca, addr, &key)

	waitUntil(t, "the agent to reconnect to the restarted gateway", func() bool { return g2.welcomed.Load() == 1 })
	out := logs.String()
	if !strings.Contains(out, "the gateway restarted and no longer knows this connection (it answered with a stateless reset)") {
		t.Errorf("the restart was not noticed by a stateless reset (after %s):\n%s", time.Since(killedAt).Round(time.Millisecond), out)
	}
	t.Log(out)
	if strings.Contains(out, "idle timeout") {
		t.Errorf("the agent waited for its idle timeout:\n%s", out)
	}
}
