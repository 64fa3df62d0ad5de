package apiserver_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/gateway/internal/apiserver"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
)

// newRotationServer is a test server whose CA keys are in the store and
// whose Authority was loaded from it, as a gateway's is.
func newRotationServer(t *testing.T) (*testServer, *certs.Authority) {
	var loaded *certs.Authority
	s := newServer(t, func(srv *apiserver.Server, clock *fakeClock) {
		keys, err := srv.CA.Export(srv.Sealer)
		if err != nil {
			t.Fatal(err)
		}
		ev := audit.Event{Time: clock.Now(), Type: audit.ClusterInit, Actor: "system", Subject: cluster, Outcome: audit.Success}
		if err := srv.Store.Initialize(context.Background(), map[string]string{"cluster": cluster}, keys, ev); err != nil {
			t.Fatal(err)
		}
		if loaded, err = certs.Load(certs.Config{Cluster: cluster, Clock: clock.Now}, keys, srv.Sealer); err != nil {
			t.Fatal(err)
		}
		srv.CA = loaded
	})
	return s, loaded
}

func phases(t *testing.T, st api.CARotationStatus) string {
	t.Helper()
	var out []string
	for _, k := range st.Kinds {
		out = append(out, k.Kind+"="+k.Phase)
	}
	return strings.Join(out, " ")
}

// TestCARotationAPI: start, activate and finish change the CA keys and
// this gateway's trust set at once, each step is safe to repeat,
// activation waits for certificates issued before the start and finish
// for those the old key signed (both say until when and how to force),
// nothing changes on a refusal, every step is audited, and after finish
// a certificate of the old CA is refused.
func TestCARotationAPI(t *testing.T) {
	s, ca := newRotationServer(t)
	admin := s.admin() // its certificate is recorded: issued before the start
	oldPin, oldUser := ca.Pin(), ca.SSHUserCA().Marshal()

	var st api.CARotationStatus
	r := s.do(admin, "GET", api.PathAdminCARotation, nil)
	if r.status != 200 {
		t.Fatalf("status: %d %s", r.status, r.body)
	}
	r.decode(t, &st)
	if got := phases(t, st); got != "x509=idle ssh-user=idle ssh-host=idle" {
		t.Fatalf("phases before start: %s", got)
	}

	s.clock.Advance(time.Minute)
	for i := range 2 {
		r = s.do(admin, "POST", api.PathAdminCARotation+"/start", api.CARotationRequest{Kind: "all"})
		if r.status != 200 {
			t.Fatalf("start #%d: %d %s", i+1, r.status, r.body)
		}
		r.decode(t, &st)
		want := "started: new key "
		if i == 1 {
			want = "already started"
		}
		if !strings.HasPrefix(st.Done["ssh-user"], want) {
			t.Fatalf("start #%d did %q; want %q", i+1, st.Done["ssh-user"], want)
		}
	}
	if got := phases(t, st); got != "x509=started ssh-user=started ssh-host=started" {
		t.Fatalf("phases after start: %s", got)
	}
	if len(ca.X509CAs()) != 2 || len(ca.SSHUserCAs()) != 2 || len(ca.SSHHostCAs()) != 2 || ca.Pin() != oldPin {
		t.Fatalf("after start the gateway trusts %d/%d/%d CAs, pin changed %v; want both of each trusted, the old one signing",
			len(ca.X509CAs()), len(ca.SSHUserCAs()), len(ca.SSHHostCAs()), ca.Pin() != oldPin)
	}
	if st.Kinds[0].Waiting != 1 {
		t.Errorf("waiting = %d; want 1 (the admin's certificate)", st.Kinds[0].Waiting)
	}
	// Each step moves the CA epoch on, which versions the trust bundle
	// agents are sent.
	started := ca.Epoch()
	if started == 0 {
		t.Fatal("the CA epoch is still 0 after start")
	}
	// Of the connected agents, those that said they hold this bundle.
	presence := &fakePresence{}
	presence.connect("db-1", s.clock.Now())
	presence.connect("app-1", s.clock.Now())
	presence.agents["db-1"] = api.Agent{Name: "db-1", Online: true, TrustEpoch: started}
	s.api.Presence = presence
	r = s.do(admin, "GET", api.PathAdminCARotation, nil)
	r.decode(t, &st)
	if a := st.Agents; a == nil || a.Connected != 2 || a.Current != 1 || a.Epoch != started {
		t.Fatalf("status agents = %+v; want 1 of 2 holding epoch %d", a, started)
	}
	s.api.Presence = nil

	seq := s.lastSeq()
	wantError(t, s.do(admin, "POST", api.PathAdminCARotation+"/activate", api.CARotationRequest{Kind: "x509"}),
		409, api.CodeConflict, "1 certificate issued before the start is still valid until", "--force", "Nothing was changed")
	wantError(t, s.do(admin, "POST", api.PathAdminCARotation+"/finish", api.CARotationRequest{}),
		409, api.CodeConflict, "does not sign yet", "activate")
	wantError(t, s.do(admin, "POST", api.PathAdminCARotation+"/rotate", api.CARotationRequest{}), 404, api.CodeNotFound, "start, activate and finish")
	wantError(t, s.do(admin, "POST", api.PathAdminCARotation+"/start", api.CARotationRequest{Kind: "ssh"}), 400, api.CodeBadRequest, "x509, ssh-user, ssh-host, all")
	if evs := s.eventsAfter(seq); len(evs) != 0 {
		t.Fatalf("refused steps appended %d events", len(evs))
	}

	s.clock.Advance(time.Minute)
	r = s.do(admin, "POST", api.PathAdminCARotation+"/activate", api.CARotationRequest{Force: true})
	if r.status != 200 {
		t.Fatalf("activate --force: %d %s", r.status, r.body)
	}
	r.decode(t, &st)
	if got := phases(t, st); got != "x509=activated ssh-user=activated ssh-host=activated" {
		t.Fatalf("phases after activate: %s", got)
	}
	if ca.Pin() == oldPin || string(ca.SSHUserCA().Marshal()) == string(oldUser) {
		t.Fatal("after activate the gateway still signs with the old keys")
	}
	activated := ca.Epoch()
	if activated <= started {
		t.Fatalf("CA epoch %d after activate, %d after start; want it higher", activated, started)
	}
	if st.Kinds[0].OldValid != 1 {
		t.Errorf("old_valid = %d; want 1 (the admin's certificate)", st.Kinds[0].OldValid)
	}
	r = s.do(admin, "POST", api.PathAdminCARotation+"/activate", api.CARotationRequest{})
	r.decode(t, &st)
	if r.status != 200 || st.Done["x509"] != "already activated" {
		t.Fatalf("activate again: %d %s", r.status, r.body)
	}

	wantError(t, s.do(admin, "POST", api.PathAdminCARotation+"/finish", api.CARotationRequest{Kind: "all"}),
		409, api.CodeConflict, "The old x509 CA key signed 1 certificate still valid until", "--force", "Nothing was changed")
	if len(ca.SSHUserCAs()) != 2 {
		t.Fatal("a refused finish of all kinds removed the SSH user CA")
	}
	r = s.do(admin, "POST", api.PathAdminCARotation+"/finish", api.CARotationRequest{Kind: "ssh-user"})
	if r.status != 200 || len(ca.SSHUserCAs()) != 1 {
		t.Fatalf("finish ssh-user: %d %s; %d user CAs trusted, want 1", r.status, r.body, len(ca.SSHUserCAs()))
	}
	if ca.Epoch() <= activated {
		t.Fatalf("CA epoch %d after finish, %d after activate; want it higher", ca.Epoch(), activated)
	}
	r = s.do(admin, "POST", api.PathAdminCARotation+"/finish", api.CARotationRequest{Kind: "ssh-user"})
	r.decode(t, &st)
	if r.status != 200 || st.Done["ssh-user"] != "nothing to finish" {
		t.Fatalf("finish ssh-user again: %d %s", r.status, r.body)
	}
	r = s.do(admin, "POST", api.PathAdminCARotation+"/finish", api.CARotationRequest{Kind: "all", Force: true})
	if r.status != 200 {
		t.Fatalf("finish --force: %d %s", r.status, r.body)
	}
	r.decode(t, &st)
	if got := phases(t, st); got != "x509=idle ssh-user=idle ssh-host=idle" {
		t.Fatalf("phases after finish: %s", got)
	}
	if len(ca.X509CAs()) != 1 || len(ca.SSHHostCAs()) != 1 {
		t.Fatalf("after finish the gateway trusts %d X.509 and %d host CAs; want 1", len(ca.X509CAs()), len(ca.SSHHostCAs()))
	}

	// The admin's certificate was signed by the old CA: refused now.
	r = s.do(admin, "GET", api.PathAdminCARotation, nil)
	if r.status != 401 {
		t.Fatalf("old-CA certificate after finish: %d %s; want 401", r.status, r.body)
	}
	if e := r.apiError(t); !strings.Contains(e.Message, "not issued by this cluster") {
		t.Errorf("old-CA certificate after finish refused with %q; want it to say the certificate is not issued by this cluster", e.Message)
	}
	// A new certificate of the new CA works.
	if r := s.do(s.client(s.issue(ca, "boss", time.Hour, true)), "GET", api.PathAdminCARotation, nil); r.status != 200 {
		t.Fatalf("new-CA certificate after finish: %d %s", r.status, r.body)
	}

	var steps []string
	for _, ev := range s.eventsAfter(seq) {
		if strings.HasPrefix(string(ev.Type), "ca.") {
			steps = append(steps, string(ev.Type)+" "+ev.Subject+" force="+ev.Details["force"])
		}
	}
	want := []string{
		"ca.rotation_activated x509 force=true", "ca.rotation_activated ssh-user force=true", "ca.rotation_activated ssh-host force=true",
		"ca.rotation_finished ssh-user force=", "ca.rotation_finished x509 force=true", "ca.rotation_finished ssh-host force=true",
	}
	if strings.Join(steps, "\n") != strings.Join(want, "\n") {
		t.Errorf("audited steps:\n%s\nwant:\n%s", strings.Join(steps, "\n"), strings.Join(want, "\n"))
	}
	s.verifyAudit()
	keys, err := s.store.CAKeys(context.Background())
	if err != nil || len(keys) != 3 {
		t.Fatalf("store holds %d CA keys (%v); want 3", len(keys), err)
	}
	for _, k := range keys {
		if !k.Active {
			t.Errorf("%s key inactive after finish", k.Kind)
		}
	}
}
