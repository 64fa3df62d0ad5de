package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/pkg/api"
)

func TestAccountOf(t *testing.T) {
	tests := []struct {
		name string
		who  api.Whoami
		err  error
		want accountStatus
	}{
		{"active", api.Whoami{User: "bob", Roles: []string{"dev"}}, nil,
			accountStatus{State: "active", Roles: []string{"dev"}}},
		{"active without roles", api.Whoami{User: "bob"}, nil,
			accountStatus{State: "active", Roles: []string{}}},
		{"locked", api.Whoami{}, &api.Error{Code: api.CodeForbidden, Message: "your account is locked: ask an administrator"},
			accountStatus{State: "locked", Message: "your account is locked: ask an administrator"}},
		{"revoked", api.Whoami{}, &api.Error{Code: api.CodeUnauthenticated, Message: "your certificate was revoked by an administrator"},
			accountStatus{State: "refused", Message: "your certificate was revoked by an administrator: run tunnel login"}},
		{"removed", api.Whoami{}, &api.Error{Code: api.CodeUnauthenticated, Message: "user bob no longer exists"},
			accountStatus{State: "refused", Message: "user bob no longer exists: run tunnel login"}},
		{"hint kept", api.Whoami{}, &api.Error{Code: api.CodeUnauthenticated, Message: "this gateway has no record of your certificate: run tunnel login"},
			accountStatus{State: "refused", Message: "this gateway has no record of your certificate: run tunnel login"}},
		{"gateway error", api.Whoami{}, &api.Error{Code: api.CodeInternal, Message: "the gateway hit an internal error"},
			accountStatus{State: "unreachable", Message: "the gateway could not check your account: the gateway hit an internal error"}},
		{"unreachable", api.Whoami{}, errors.New("cannot reach the gateway at 127.0.0.1:1: connection refused (is tunnel-gateway running there?)"),
			accountStatus{State: "unreachable", Message: "cannot reach the gateway at 127.0.0.1:1: connection refused (is tunnel-gateway running there?)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := accountOf(tc.who, tc.err)
			if got.State != tc.want.State || got.Message != tc.want.Message || strings.Join(got.Roles, ",") != strings.Join(tc.want.Roles, ",") || (got.Roles == nil) != (tc.want.Roles == nil) {
				t.Errorf("got %+v; want %+v", got, tc.want)
			}
		})
	}
}

func TestPrintStatus(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	p := profile.Profile{Gateway: "gw:8443", Cluster: "prod", User: "bob", Roles: []string{"dev"}, NotAfter: now.Add(time.Hour)}
	tests := []struct {
		name    string
		account accountStatus
		offline bool
		want    []string
		not     []string
	}{
		{"active", accountStatus{State: "active", Roles: []string{"dev"}}, false,
			[]string{"Valid:    until", "Account:  active"}, []string{"run tunnel login to use them"}},
		{"roles changed", accountStatus{State: "active", Roles: []string{"dev", "ops"}}, false,
			[]string{"Roles:    dev (the gateway now lists dev, ops: run tunnel login to use them)"}, nil},
		{"revoked", accountStatus{State: "refused", Message: "your certificate was revoked by an administrator: run tunnel login"}, false,
			[]string{"Valid:    no: the gateway refuses it", "Account:  your certificate was revoked by an administrator: run tunnel login"}, []string{"Valid:    until"}},
		{"unreachable", accountStatus{State: "unreachable", Message: "cannot reach the gateway at gw:8443: connection refused"}, false,
			[]string{"Valid:    until", "Account:  not checked: cannot reach the gateway at gw:8443: connection refused; the lines above are this machine's view only"}, nil},
		{"offline", accountStatus{State: "not_checked"}, true,
			[]string{"Valid:    until", "Account:  not checked (--offline)"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := statusOf(p, now)
			s.Account = tc.account
			if tc.account.State == "refused" || tc.account.State == "locked" {
				s.Valid = false
			}
			var out bytes.Buffer
			cmd := &cobra.Command{}
			cmd.SetOut(&out)
			printStatus(cmd, s, now, tc.offline)
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("status lacks %q:\n%s", w, out.String())
				}
			}
			for _, w := range tc.not {
				if strings.Contains(out.String(), w) {
					t.Errorf("status holds %q:\n%s", w, out.String())
				}
			}
		})
	}
}
