package access_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/gateway/internal/access"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// live is a fake live-stream tracker; ended records the reason each
// stream (by name) was ended with.
type live struct {
	mu      sync.Mutex
	streams map[string]access.LiveStream
	ended   map[string]string
}

func (l *live) add(name string, s access.LiveStream) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.streams == nil {
		l.streams, l.ended = map[string]access.LiveStream{}, map[string]string{}
	}
	s.End = func(reason string) {
		l.mu.Lock()
		defer l.mu.Unlock()
		l.ended[name] = reason
		delete(l.streams, name)
	}
	l.streams[name] = s
}

func (l *live) LiveStreams() []access.LiveStream {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []access.LiveStream
	for _, s := range l.streams {
		out = append(out, s)
	}
	return out
}

func (l *live) endedWith(name string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ended[name]
}

// ender is a fake session manager: it ends sessions in the store.
type ender struct {
	st    store.Store
	mu    sync.Mutex
	ended map[string]string
}

func (e *ender) EndChanged(ctx context.Context, s store.Session, reason string) {
	e.mu.Lock()
	e.ended[s.ID] = reason
	e.mu.Unlock()
	_, _ = e.st.EndSession(ctx, s.ID, store.SessionRevoked, reason, time.Now(), event(audit.SessionRevoked, s.ID))
}

func (e *ender) endedWith(id string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ended[id]
}

func (e *env) session(id, user, node, login string) {
	e.t.Helper()
	now := time.Now()
	s := store.Session{ID: id, User: user, Node: node, Login: login, CreatedAt: now, Deadline: now.Add(time.Hour), State: store.SessionActive}
	must(e.t, e.store.CreateSession(context.Background(), s, nil, []audit.Event{event(audit.SessionCreated, id)}))
}

func TestReevaluate(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	l, en := &live{}, &ender{st: e.store, ended: map[string]string{}}
	e.d.Live, e.d.Sessions = l, en
	user := func(n string) identity.ID { return identity.ID{Cluster: "prod", Kind: identity.User, Name: n} }
	agent := func(n string) identity.ID { return identity.ID{Cluster: "prod", Kind: identity.Agent, Name: n} }
	l.add("bob-db", access.LiveStream{Caller: user("bob"), Node: "db-1", Service: "postgres"})
	l.add("bob-web", access.LiveStream{Caller: user("bob"), Node: "web-1", Service: "http"})
	l.add("alice-web", access.LiveStream{Caller: user("alice"), Node: "web-1", Service: "http"})
	l.add("app-db", access.LiveStream{Caller: agent("app-1"), Node: "db-1", Service: "postgres"})
	l.add("app-web", access.LiveStream{Caller: agent("app-1"), Node: "web-1", Service: "http"})
	// An SSH session's stream is judged through its session.
	l.add("bob-ssh", access.LiveStream{Caller: user("bob"), Node: "db-1", Service: "ssh", Session: "s-bob-db"})
	e.session("s-bob-db", "bob", "db-1", "postgres")
	e.session("s-alice-web", "alice", "web-1", "deploy")
	e.session("s-bob-web-jump", "bob", "web-1", "root,ubuntu")

	// Nothing changed: nothing ends.
	must(t, e.d.Reevaluate(ctx))
	for _, n := range []string{"bob-db", "bob-web", "alice-web", "app-db", "app-web", "bob-ssh"} {
		if r := l.endedWith(n); r != "" {
			t.Errorf("stream %s ended with no change: %q", n, r)
		}
	}
	if len(en.ended) != 0 {
		t.Errorf("sessions ended with no change: %v", en.ended)
	}

	// tunnel admin users revoke bob dba; roles update ops --login ubuntu;
	// policy rule 1 removed.
	must(t, e.store.SetUserRoles(ctx, "bob", []string{"ops"}, event(audit.UserRolesChanged, "bob")))
	ops, err := e.store.GetRole(ctx, "ops")
	must(t, err)
	ops.Logins = []string{"ubuntu"}
	must(t, e.store.UpdateRole(ctx, ops, event(audit.RoleUpdated, "ops")))
	must(t, e.store.DeletePolicyRule(ctx, 1, event(audit.PolicyRemoved, "1")))
	must(t, e.d.Reevaluate(ctx))

	for name, want := range map[string]string{
		"bob-db":    "access changed by an administrator: none of your roles allows db-1/postgres",
		"app-db":    "access changed by an administrator: no rule allows app-1 to reach db-1/postgres (default deny)",
		"bob-web":   "",
		"alice-web": "",
		"app-web":   "",
		"bob-ssh":   "", // ended with its session, by the session manager
	} {
		got := l.endedWith(name)
		if want == "" && got != "" || !strings.HasPrefix(got, want) {
			t.Errorf("stream %s: ended with %q; want %q", name, got, want)
		}
	}
	for id, want := range map[string]string{
		"s-bob-db":       "access changed by an administrator: none of your roles allows db-1 any more",
		"s-alice-web":    `access changed by an administrator: your roles no longer allow login "deploy" on web-1`,
		"s-bob-web-jump": "", // ubuntu is still allowed
	} {
		if got := en.endedWith(id); got != want {
			t.Errorf("session %s: ended with %q; want %q", id, got, want)
		}
	}
	var closed int
	for _, ev := range e.audit.take() {
		if ev.Type == audit.StreamDenied && strings.HasPrefix(ev.Reason, access.ReasonPrefix) {
			closed++
		}
	}
	if closed != 2 {
		t.Errorf("%d stream.denied events for the closed streams; want 2", closed)
	}

	// A removed user's session ends too; an ended session is not ended again.
	must(t, e.store.DeleteUser(ctx, "alice", event(audit.UserDeleted, "alice")))
	e.session("s-alice-2", "alice", "web-1", "ubuntu")
	must(t, e.d.Reevaluate(ctx))
	if got := en.endedWith("s-alice-2"); got != "access changed by an administrator: user alice no longer exists" {
		t.Errorf("session of a removed user: ended with %q", got)
	}
}

// countingStore counts user and role reads.
type countingStore struct {
	store.Store
	mu           sync.Mutex
	users, roles int
}

func (c *countingStore) GetUser(ctx context.Context, name string) (store.User, error) {
	c.mu.Lock()
	c.users++
	c.mu.Unlock()
	return c.Store.GetUser(ctx, name)
}

func (c *countingStore) GetRole(ctx context.Context, name string) (store.Role, error) {
	c.mu.Lock()
	c.roles++
	c.mu.Unlock()
	return c.Store.GetRole(ctx, name)
}

// TestReevaluateReadsEachOnce: a pass over many streams and sessions of
// one user reads that user and each role once, so a change costs the
// store a few queries, not a few per stream.
func TestReevaluateReadsEachOnce(t *testing.T) {
	e := newEnv(t)
	cs := &countingStore{Store: e.store}
	l := &live{}
	d := &access.Decider{Store: cs, Audit: e.audit, Live: l, Sessions: &ender{st: e.store, ended: map[string]string{}}}
	for i := range 50 {
		l.add("s"+string(rune('a'+i%26))+string(rune('a'+i/26)), access.LiveStream{Caller: identity.ID{Kind: identity.User, Name: "bob"}, Node: "web-1", Service: "http"})
	}
	for _, id := range []string{"x1", "x2", "x3"} {
		e.session(id, "bob", "web-1", "ubuntu")
	}
	must(t, d.Reevaluate(context.Background()))
	if cs.users != 1 || cs.roles != 2 {
		t.Errorf("one pass read users %d times and roles %d times; want 1 and 2 (bob, ops and dba)", cs.users, cs.roles)
	}
}
