package relay

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/gateway/internal/access"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/wire"
)

// echoOnce checks that a live stream echoes msg, leaving it open.
func echoOnce(t *testing.T, st *quic.Stream, msg string) {
	t.Helper()
	if _, err := st.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	_ = st.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(st, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo: got %q, %v; want %q", buf, err, msg)
	}
}

// cutWithAccessChanged waits for st to be reset with StreamAccessChanged.
func cutWithAccessChanged(t *testing.T, st *quic.Stream, what string) {
	t.Helper()
	_ = st.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err := io.ReadAll(st)
	var se *quic.StreamError
	if !errors.As(err, &se) || se.ErrorCode != transport.StreamAccessChanged {
		t.Fatalf("%s: read ended with %v; want a reset with StreamAccessChanged", what, err)
	}
}

// TestReevaluateCutsWhatIsNoLongerAllowed: after a role loses a service
// and a policy rule is removed, Reevaluate cuts the user's and the agent's
// streams that the new rules refuse, with the reason audited, and leaves
// the others running; the live-stream tracker reports each stream's
// caller, node and service.
func TestReevaluateCutsWhatIsNoLongerAllowed(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	ctx := context.Background()
	h.startAgent("db-1", map[string]handler{"postgres": echo, "mysql": echo})
	h.addUser("alice", "db-1/postgres", "db-1/mysql")
	app := h.startAgent("app-1", nil)
	if _, err := h.db.AddPolicyRule(ctx, store.PolicyRule{Effect: store.Allow, From: "app-1", To: "db-1/postgres", CreatedBy: "t", CreatedAt: time.Now()}, h.event()); err != nil {
		t.Fatal(err)
	}
	alice := h.dial(h.cert(identity.User, "alice"))
	streams := map[string]*quic.Stream{}
	for name, c := range map[string]struct {
		conn   *quic.Conn
		target string
	}{"alice-pg": {alice, "db-1/postgres"}, "alice-my": {alice, "db-1/mysql"}, "app-pg": {app.conn, "db-1/postgres"}} {
		st, rep, err := open(t, c.conn, c.target, "", nil)
		if err != nil || rep.Status != wire.StatusOK {
			t.Fatalf("%s: %v %+v", name, err, rep)
		}
		echoOnce(t, st, "hello "+name)
		streams[name] = st
	}
	var got []string
	for _, l := range h.srv.LiveStreams() {
		got = append(got, l.Caller.Name+">"+l.Node+"/"+l.Service)
	}
	if want := "alice>db-1/mysql,alice>db-1/postgres,app-1>db-1/postgres"; strings.Join(sorted(got), ",") != want {
		t.Errorf("LiveStreams = %v; want %s", got, want)
	}

	// Nothing changed: nothing is cut.
	if err := h.srv.Reevaluate(ctx); err != nil {
		t.Fatal(err)
	}
	for name, st := range streams {
		echoOnce(t, st, "still "+name)
	}

	role, err := h.db.GetRole(ctx, "role-alice")
	if err != nil {
		t.Fatal(err)
	}
	role.Services = []string{"db-1/postgres"}
	if err := h.db.UpdateRole(ctx, role, h.event()); err != nil {
		t.Fatal(err)
	}
	rules, err := h.db.ListPolicyRules(ctx)
	if err != nil || len(rules) != 1 {
		t.Fatalf("rules %v, %v", rules, err)
	}
	if err := h.db.DeletePolicyRule(ctx, rules[0].ID, h.event()); err != nil {
		t.Fatal(err)
	}
	// ReloadPolicy is what the admin API calls after a change.
	if err := h.srv.ReloadPolicy(ctx); err != nil {
		t.Fatal(err)
	}
	cutWithAccessChanged(t, streams["alice-my"], "alice's mysql stream")
	cutWithAccessChanged(t, streams["app-pg"], "app-1's postgres stream")
	echoOnce(t, streams["alice-pg"], "survives")

	var reasons []string
	for _, ev := range h.events(audit.StreamDenied) {
		reasons = append(reasons, ev.Actor+": "+ev.Reason)
	}
	want := []string{
		"agent:app-1: " + access.ReasonPrefix + "no rule allows app-1 to reach db-1/postgres",
		"alice: " + access.ReasonPrefix + "none of your roles allows db-1/mysql",
	}
	reasons = sorted(reasons)
	if len(reasons) != 2 || !strings.HasPrefix(reasons[0], want[0]) || !strings.HasPrefix(reasons[1], want[1]) {
		t.Errorf("stream.denied events %q; want the two cuts with their reasons %q", reasons, want)
	}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}
