package login_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// TestLoginCarriesApprovedRequest: a login during the window of an
// approved access request carries its role and logins; the SSH
// certificate ends with the window (its login comes only from the
// request) and says so; the login event names the request. After the
// window, the next login carries nothing of it.
func TestLoginCarriesApprovedRequest(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.addRole("dba", []string{"postgres"}, 4*time.Hour, false)
	e.addRole("dev", []string{"ubuntu"}, 0, false)
	secret := e.addUser("bob", "dev")
	now := e.clock.Now()
	ev := audit.Event{Time: now, Type: audit.RequestCreated, Actor: "bob", Subject: "r1", Outcome: audit.Success}
	r := store.AccessRequest{ID: "r1", User: "bob", Role: "dba", Reason: "INC-1", Duration: 30 * time.Minute, CreatedAt: now, PendingUntil: now.Add(time.Hour)}
	if err := e.store.CreateRequest(ctx, r, ev); err != nil {
		t.Fatal(err)
	}
	end := now.Add(30 * time.Minute)
	if _, err := e.store.DecideRequest(ctx, "r1", store.RequestDecision{State: store.RequestApproved, By: "dave", At: now, Start: now, End: end}, ev); err != nil {
		t.Fatal(err)
	}

	seq := e.lastSeq()
	resp, err := e.login(e.request("bob", password, e.code(secret, 0)))
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	if !slices.Contains(resp.Roles, "dba") || !slices.Equal(resp.Logins, []string{"postgres", "ubuntu"}) {
		t.Errorf("login roles %v logins %v; want dba added and postgres, ubuntu", resp.Roles, resp.Logins)
	}
	sc := sshCert(t, resp.SSHCertificate)
	if vb := time.Unix(int64(sc.ValidBefore), 0); vb.After(end) {
		t.Errorf("SSH certificate valid until %v; want no later than the window's end %v", vb, end)
	}
	if !resp.NotAfter.After(end) {
		t.Errorf("X.509 certificate ends %v; want the login's own length (1 h), past the window", resp.NotAfter)
	}
	if !strings.Contains(resp.Warning, "SSH certificate ends at") {
		t.Errorf("warning %q; want it to say the SSH certificate ends with the window", resp.Warning)
	}
	found := false
	for _, ev := range e.eventsAfter(seq) {
		found = found || ev.Type == audit.LoginSuccess
	}
	evs, err := e.store.ListAudit(ctx, store.AuditFilter{AfterSeq: seq})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Type == audit.LoginSuccess && !strings.HasPrefix(ev.Details["requests"], "r1:dba until ") {
			t.Errorf("login.success details %v; want the request named", ev.Details)
		}
	}
	if !found {
		t.Error("no login.success event")
	}

	e.clock.Advance(31 * time.Minute)
	resp, err = e.login(e.request("bob", password, e.code(secret, 0)))
	if err != nil {
		t.Fatalf("Login after the window: %v", err)
	}
	if slices.Contains(resp.Roles, "dba") || !slices.Equal(resp.Logins, []string{"ubuntu"}) || resp.Warning != "" {
		t.Errorf("login after the window: roles %v logins %v warning %q; want dev's only", resp.Roles, resp.Logins, resp.Warning)
	}
}
