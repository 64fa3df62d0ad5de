package sessions_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/gateway/internal/sessions"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// update changes role name with f.
func (e *env) update(name string, f func(*store.Role)) {
	e.t.Helper()
	ctx := context.Background()
	r, err := e.store.GetRole(ctx, name)
	must(e.t, err)
	f(&r)
	must(e.t, e.store.UpdateRole(ctx, r, event(audit.RoleUpdated, name)))
}

// lastCreated returns the details of the last session.created event.
func (e *env) lastCreated() audit.Event {
	e.t.Helper()
	evs, err := e.store.ListAudit(context.Background(), store.AuditFilter{})
	must(e.t, err)
	var last audit.Event
	for _, ev := range evs {
		if ev.Type == audit.SessionCreated {
			last = ev
		}
	}
	return last
}

// TestCreateFromOutsideSource: a session from outside the networks of the
// only role that allows the node is refused with a sentence naming the
// source and the role, and the refusal is audited; from inside it opens.
func TestCreateFromOutsideSource(t *testing.T) {
	e := newEnv(t)
	e.update("ops", func(r *store.Role) { r.Sources = []string{"10.0.0.0/8"} })
	_, err := e.create("bob", "web-1", 0, time.Time{}) // from 192.0.2.1
	var se *sessions.Error
	want := "you connect from 192.0.2.1, and role ops applies only from 10.0.0.0/8: connect from one of its networks or ask an admin to add yours (tunnel admin roles update ops --source CIDR)"
	if !errors.As(err, &se) || se.Status != 403 || se.Message != want {
		t.Fatalf("CreateUntil from outside = %v; want 403 %q", err, want)
	}
	if ev := e.lastCreated(); ev.Outcome != audit.Failure || ev.Reason != want || ev.SourceIP != "192.0.2.1" {
		t.Errorf("session.created refusal %+v; want failure with the sentence and the source", ev)
	}
	req := api.CreateSessionRequest{Node: "web-1", Login: "ubuntu", SSHPublicKey: sshKey(t)}
	if _, err := e.m.CreateUntil(context.Background(), e.user("bob"), req, "10.9.8.7", time.Time{}); err != nil {
		t.Fatalf("CreateUntil from inside: %v", err)
	}
	// Through the jump host too.
	_, err = e.m.OpenForJump(context.Background(), e.user("bob"), "web-1", []string{"ubuntu"}, "ab", time.Now().Add(time.Hour), "192.0.2.1")
	if !errors.As(err, &se) || se.Message != want {
		t.Errorf("OpenForJump from outside = %v; want %q", err, want)
	}
	if _, err := e.m.OpenForJump(context.Background(), e.user("bob"), "web-1", []string{"ubuntu"}, "ab", time.Now().Add(time.Hour), "10.0.0.1"); err != nil {
		t.Errorf("OpenForJump from inside: %v", err)
	}
}

// TestSudo: Sudo says whether the user's roles give their session's login
// sudo on the node, from the sources of their live sessions there, and
// session.created records it.
func TestSudo(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if ok, err := e.m.Sudo(ctx, "bob", "web-1"); err != nil || ok {
		t.Fatalf("Sudo without a sudo role = %v, %v; want false", ok, err)
	}
	if _, err := e.create("bob", "web-1", 0, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, ok := e.lastCreated().Details["sudo"]; ok {
		t.Errorf("session.created records sudo for a role without it")
	}
	e.update("ops", func(r *store.Role) { r.Sudo = true })
	if ok, err := e.m.Sudo(ctx, "bob", "web-1"); err != nil || !ok {
		t.Fatalf("Sudo with ops --sudo = %v, %v; want true", ok, err)
	}
	if ok, err := e.m.Sudo(ctx, "bob", "db-1"); err != nil || ok {
		t.Errorf("Sudo on a node ops does not match = %v, %v; want false", ok, err)
	}
	if _, err := e.create("alice", "web-1", 0, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if got := e.lastCreated().Details["sudo"]; got != "true" {
		t.Errorf("session.created sudo = %q; want true", got)
	}
	// Limited to a network the live session (192.0.2.1) is not in: no sudo.
	e.update("ops", func(r *store.Role) { r.Sources = []string{"10.0.0.0/8"} })
	if ok, err := e.m.Sudo(ctx, "bob", "web-1"); err != nil || ok {
		t.Errorf("Sudo for a session outside the role's networks = %v, %v; want false", ok, err)
	}
}
