package wire_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/wire"
)

// TestSecretNeverPrinted: a header or control message holding a database
// password prints and logs without it, and still carries it on the wire.
func TestSecretNeverPrinted(t *testing.T) {
	const pw = "s3cret-pa55word"
	h := wire.Header{Kind: wire.KindDeliver, Target: "postgres", DBUser: "v-app", DBPassword: pw}
	m := wire.Control{Type: wire.MsgExpect, Ticket: "t", DBUser: "v-app", DBPassword: pw}
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("x", "header", h, "control", m, "pw", h.DBPassword)
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("x", "pw", h.DBPassword)
	for _, s := range []string{fmt.Sprint(h), fmt.Sprintf("%+v %#v %v %s", h, h, m, m.DBPassword), logged.String()} {
		if strings.Contains(s, pw) {
			t.Errorf("the password is printed: %s", s)
		}
	}
	b, err := wire.AppendHeader(nil, h)
	if err != nil {
		t.Fatal(err)
	}
	got, err := wire.ParseHeader(b)
	if err != nil || got.DBPassword.Reveal() != pw || got.DBUser != "v-app" {
		t.Fatalf("header round trip: %+v, %v", got, err)
	}
	var buf bytes.Buffer
	if err := wire.WriteControl(&buf, m); err != nil {
		t.Fatal(err)
	}
	gm, err := wire.ReadControl(&buf)
	if err != nil || gm.DBPassword.Reveal() != pw {
		t.Fatalf("control round trip: %v", err)
	}
	j, _ := json.Marshal(wire.Service{Name: "postgres", Credentials: "database/creds/orders"})
	if !strings.Contains(string(j), `"credentials":"database/creds/orders"`) {
		t.Errorf("service JSON: %s", j)
	}
}
