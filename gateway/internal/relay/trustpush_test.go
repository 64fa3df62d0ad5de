package relay

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// trustAgent connects an agent and returns its control stream, past the
// welcome.
func trustAgent(h *harness, name string) *quic.Stream {
	h.t.Helper()
	h.enrol(name)
	conn := h.dial(h.cert(identity.Agent, name))
	h.t.Cleanup(func() { conn.CloseWithError(0, "") })
	ctl, err := conn.OpenStreamSync(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	if err := wire.WriteHeader(ctl, wire.Header{Kind: wire.KindControl}); err != nil {
		h.t.Fatal(err)
	}
	if err := wire.WriteControl(ctl, wire.Control{Type: wire.MsgHello, Version: "test"}); err != nil {
		h.t.Fatal(err)
	}
	if m, err := wire.ReadControl(ctl); err != nil || m.Type != wire.MsgWelcome {
		h.t.Fatalf("agent %s: no welcome: %+v %v", name, m, err)
	}
	waitFor(h.t, "agent "+name+" registered", func() bool { return h.srv.lookup(name) != nil })
	return ctl
}

// TestPushTrust: PushTrust sends every connected agent the CA's trust
// bundle on its control stream, as a renewal answer would carry it.
func TestPushTrust(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ctls := map[string]*quic.Stream{"db-1": trustAgent(h, "db-1"), "app-1": trustAgent(h, "app-1")}
	// The harness's CA cannot reload: as if its keys were a generation
	// other than the one last pushed.
	h.srv.trustGen.Store(h.ca.Generation() + 1)
	h.srv.PushTrust()
	want := TrustBundle(h.ca).Trust
	for name, ctl := range ctls {
		_ = ctl.SetReadDeadline(time.Now().Add(30 * time.Second))
		m, err := wire.ReadControl(ctl)
		if err != nil {
			t.Fatalf("agent %s: %v", name, err)
		}
		if m.Type != wire.MsgTrust || m.Trust == nil {
			t.Fatalf("agent %s got %+v; want a trust bundle", name, m)
		}
		if err := m.Trust.Check(); err != nil {
			t.Fatalf("agent %s got a bundle Check refuses: %v", name, err)
		}
		got := m.Trust
		if got.Cluster != testCluster || got.X509 != want.X509 || !strings.Contains(got.X509, "BEGIN CERTIFICATE") ||
			len(got.SSHUserCAs) != 1 || got.SSHUserCAs[0] != want.SSHUserCAs[0] ||
			len(got.SSHHostCAs) != 1 || got.SSHHostCAs[0] != want.SSHHostCAs[0] || got.Pin != h.ca.Pin() {
			t.Fatalf("agent %s got %+v; want the CA's bundle %+v", name, got, want)
		}
	}
	waitFor(t, "the push to be logged", func() bool { return strings.Contains(h.logs.String(), "trust bundle sent to the connected agents") })
}

// TestTrustEpochReported: the gateway shows, per connected agent, the
// epoch of the trust bundle the agent said it holds: in its hello, then
// in each wire.MsgTrusted (what rotate status counts).
func TestTrustEpochReported(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	h.enrol("db-1")
	conn := h.dial(h.cert(identity.Agent, "db-1"))
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	ctl, err := conn.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := wire.WriteHeader(ctl, wire.Header{Kind: wire.KindControl}); err != nil {
		t.Fatal(err)
	}
	if err := wire.WriteControl(ctl, wire.Control{Type: wire.MsgHello, Version: "test", Epoch: 7}); err != nil {
		t.Fatal(err)
	}
	if m, err := wire.ReadControl(ctl); err != nil || m.Type != wire.MsgWelcome {
		t.Fatalf("no welcome: %+v %v", m, err)
	}
	epoch := func() uint64 { return h.srv.Online()["db-1"].TrustEpoch }
	waitFor(t, "the hello's epoch", func() bool { return epoch() == 7 })
	if err := wire.WriteControl(ctl, wire.Control{Type: wire.MsgTrusted, Epoch: 9}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the epoch of a MsgTrusted", func() bool { return epoch() == 9 })
}
