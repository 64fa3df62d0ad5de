package wire_test

import (
	"bytes"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tunnelhq/tunnel/pkg/wire"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenHeaders lists a header of every kind with every combination of its
// optional fields.
func goldenHeaders() map[string]wire.Header {
	kinds := []wire.Kind{wire.KindControl, wire.KindDial, wire.KindDeliver}
	m := make(map[string]wire.Header)
	for _, k := range kinds {
		for mask := range 8 {
			h := wire.Header{Kind: k}
			name := "header-" + k.String()
			if mask == 0 {
				name += "-empty"
			}
			if mask&1 != 0 {
				h.Target = "db-1/postgres"
				name += "-target"
			}
			if mask&2 != 0 {
				h.Caller = "tunnel://prod/user/alice"
				name += "-caller"
			}
			if mask&4 != 0 {
				h.Session = "s-0123456789abcdef"
				name += "-session"
			}
			m[name] = h
		}
	}
	// The limits: the longest field, and multi-byte UTF-8.
	m["header-dial-target-max"] = wire.Header{Kind: wire.KindDial, Target: strings.Repeat("t", 255)}
	m["header-deliver-all-max"] = wire.Header{
		Kind:    wire.KindDeliver,
		Target:  strings.Repeat("t", 255),
		Caller:  strings.Repeat("c", 255),
		Session: strings.Repeat("s", 255),
	}
	m["header-dial-target-utf8"] = wire.Header{Kind: wire.KindDial, Target: "nœud-東京/サービス"}
	// The SSH session fields, alone and with the others.
	m["header-deliver-login"] = wire.Header{Kind: wire.KindDeliver, Target: "ssh", Login: "deploy"}
	m["header-deliver-deadline"] = wire.Header{Kind: wire.KindDeliver, Target: "ssh", Deadline: 1795500000}
	m["header-deliver-idle"] = wire.Header{Kind: wire.KindDeliver, Target: "ssh", Idle: 900}
	m["header-deliver-permit"] = wire.Header{Kind: wire.KindDeliver, Target: "ssh", Permit: "port-forwarding,agent-forwarding"}
	m["header-deliver-all-fields"] = wire.Header{
		Kind:     wire.KindDeliver,
		Target:   "ssh",
		Caller:   "tunnel://prod/user/alice",
		Session:  "s-0123456789abcdef",
		Login:    "deploy",
		Deadline: 1795500000,
		Idle:     900,
	}
	// The direct path: a dial offering it, and a peer stream's ticket.
	m["header-dial-direct"] = wire.Header{Kind: wire.KindDial, Target: "db-1/postgres", Direct: wire.DirectOffer}
	m["header-peer-ticket"] = wire.Header{Kind: wire.KindPeer, Target: "postgres", Ticket: "0123456789abcdef0123456789abcdef"}
	// A stream to a service whose agent logs in to its database.
	m["header-deliver-dbcreds"] = wire.Header{Kind: wire.KindDeliver, Target: "postgres", Caller: "tunnel://prod/agent/app-1",
		DBUser: "v-token-orders-a-x1y2z3-1795500000", DBPassword: "A1a-0123456789abcdef"}
	return m
}

// goldenReplies lists a reply of every status, with and without a message.
func goldenReplies() map[string]wire.Reply {
	m := make(map[string]wire.Reply)
	for st := wire.StatusOK; st <= wire.StatusDirect; st++ {
		name := "reply-" + strings.ReplaceAll(st.String(), " ", "-")
		m[name+"-empty"] = wire.Reply{Status: st}
		m[name+"-message"] = wire.Reply{Status: st, Message: fmt.Sprintf("%s: because ✓", st)}
	}
	m["reply-denied-message-max"] = wire.Reply{Status: wire.StatusDenied, Message: strings.Repeat("m", wire.MaxReplySize-4)}
	return m
}

// goldenControls lists a control message of every type, as sent.
func goldenControls() map[string]wire.Control {
	return map[string]wire.Control{
		"control-hello": {Type: wire.MsgHello, Version: "1.2.3", Services: []wire.Service{
			{Name: "postgres", Protocol: "postgres"},
			{Name: "ssh"},
		}},
		"control-hello-bare":     {Type: wire.MsgHello},
		"control-catalog":        {Type: wire.MsgCatalog, Services: []wire.Service{{Name: "mysql", Protocol: "mysql"}}},
		"control-ping":           {Type: wire.MsgPing, Seq: 42},
		"control-pong":           {Type: wire.MsgPong, Seq: 42},
		"control-beat":           {Type: wire.MsgBeat, Seq: 42},
		"control-welcome":        {Type: wire.MsgWelcome, Message: "welcome db-1 <&>"},
		"control-end-session":    {Type: wire.MsgEndSession, Session: "s-0123456789abcdef", Message: "access revoked by admin"},
		"control-hello-direct":   {Type: wire.MsgHello, Version: "1.2.3", Direct: true, Addrs: []string{"10.0.0.5:41641", "[fd00::5]:41641"}},
		"control-welcome-direct": {Type: wire.MsgWelcome, Direct: true},
		"control-direct": {Type: wire.MsgDirect, Ticket: "0123456789abcdef0123456789abcdef", Node: "db-1",
			Addrs: []string{"203.0.113.7:41641", "10.0.0.5:41641"}},
		"control-expect": {Type: wire.MsgExpect, Ticket: "0123456789abcdef0123456789abcdef", Caller: "tunnel://prod/agent/app-1",
			Serial: "0a1b2c", Service: "postgres", Addrs: []string{"198.51.100.9:50000"}},
		"control-adopt": {Type: wire.MsgAdopt, Ticket: "0123456789abcdef0123456789abcdef", Caller: "tunnel://prod/agent/app-1",
			Serial: "0a1b2c", Service: "postgres"},
		"control-ended":     {Type: wire.MsgEnded, Ticket: "0123456789abcdef0123456789abcdef"},
		"control-committed": {Type: wire.MsgCommitted, Ticket: "0123456789abcdef0123456789abcdef"},
		"control-cut":       {Type: wire.MsgCut, Ticket: "0123456789abcdef0123456789abcdef", Code: 3, Message: "access revoked by an administrator"},
		"control-trust":     {Type: wire.MsgTrust, Trust: goldenTrust()},
	}
}

func encodeControl(t testing.TB, m wire.Control) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := wire.WriteControl(&buf, m); err != nil {
		t.Fatalf("WriteControl(%+v) = %v", m, err)
	}
	return buf.Bytes()
}

// checkGolden compares got with testdata/name.golden, a hex dump, and
// returns the bytes the file holds. With -update it writes the file.
func checkGolden(t *testing.T, name string, got []byte) []byte {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(hex.Dump(got)), 0o644); err != nil {
			t.Fatal(err)
		}
		return got
	}
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./pkg/wire -update to create it)", err)
	}
	want, err := parseDump(string(text))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("encoding changed from %s (if on purpose, bump wire.ALPN/Version as needed and run -update):\ngot\n%swant\n%s",
			path, hex.Dump(got), hex.Dump(want))
	}
	return want
}

// parseDump reads back the output of hex.Dump.
func parseDump(s string) ([]byte, error) {
	var out []byte
	for i, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		if line == "" {
			continue
		}
		// "00000000  01 02 00 ... |ascii|": offset, then 16 bytes in a fixed-width column.
		if len(line) < 11 {
			return nil, fmt.Errorf("line %d: too short", i+1)
		}
		col := line[10:min(len(line), 59)]
		for _, f := range strings.Fields(col) {
			b, err := hex.DecodeString(f)
			if err != nil || len(b) != 1 {
				return nil, fmt.Errorf("line %d: bad byte %q", i+1, f)
			}
			out = append(out, b[0])
		}
	}
	return out, nil
}

func TestGoldenHeaders(t *testing.T) {
	for name, h := range goldenHeaders() {
		t.Run(name, func(t *testing.T) {
			got, err := wire.AppendHeader(nil, h)
			if err != nil {
				t.Fatalf("AppendHeader(%+v) = %v", h, err)
			}
			want := checkGolden(t, name, got)
			// The golden bytes decode to the header, so the file pins the
			// decoder as well as the encoder.
			dec, err := wire.ParseHeader(want)
			if err != nil {
				t.Fatalf("ParseHeader(golden) = %v", err)
			}
			if diff := cmp.Diff(h, dec); diff != "" {
				t.Errorf("ParseHeader(golden) mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGoldenReplies(t *testing.T) {
	for name, r := range goldenReplies() {
		t.Run(name, func(t *testing.T) {
			got, err := wire.AppendReply(nil, r)
			if err != nil {
				t.Fatalf("AppendReply(%+v) = %v", r, err)
			}
			want := checkGolden(t, name, got)
			dec, err := wire.ReadReply(bytes.NewReader(want))
			if err != nil {
				t.Fatalf("ReadReply(golden) = %v", err)
			}
			if diff := cmp.Diff(r, dec); diff != "" {
				t.Errorf("ReadReply(golden) mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGoldenControls(t *testing.T) {
	for name, m := range goldenControls() {
		t.Run(name, func(t *testing.T) {
			want := checkGolden(t, name, encodeControl(t, m))
			dec, err := wire.ReadControl(bytes.NewReader(want))
			if err != nil {
				t.Fatalf("ReadControl(golden) = %v", err)
			}
			if diff := cmp.Diff(m, dec); diff != "" {
				t.Errorf("ReadControl(golden) mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestGoldenFilesUsed fails on a stale golden file no case writes any more.
func TestGoldenFilesUsed(t *testing.T) {
	if *update {
		t.Skip("-update")
	}
	known := make(map[string]bool)
	for n := range goldenHeaders() {
		known[n] = true
	}
	for n := range goldenReplies() {
		known[n] = true
	}
	for n := range goldenControls() {
		known[n] = true
	}
	files, err := filepath.Glob(filepath.Join("testdata", "*.golden"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if n := strings.TrimSuffix(filepath.Base(f), ".golden"); !known[n] {
			t.Errorf("%s is not produced by any case; delete it", f)
		}
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	for name, h := range goldenHeaders() {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := wire.WriteHeader(&buf, h); err != nil {
				t.Fatalf("WriteHeader = %v", err)
			}
			if buf.Len() > wire.MaxHeaderSize {
				t.Errorf("encoded size = %d; want at most %d", buf.Len(), wire.MaxHeaderSize)
			}
			got, err := wire.ReadHeader(&buf)
			if err != nil {
				t.Fatalf("ReadHeader = %v", err)
			}
			if diff := cmp.Diff(h, got); diff != "" {
				t.Errorf("round trip mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReplyRoundTrip(t *testing.T) {
	for name, r := range goldenReplies() {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := wire.WriteReply(&buf, r); err != nil {
				t.Fatalf("WriteReply = %v", err)
			}
			got, err := wire.ReadReply(&buf)
			if err != nil {
				t.Fatalf("ReadReply = %v", err)
			}
			if diff := cmp.Diff(r, got); diff != "" {
				t.Errorf("round trip mismatch (-want +got):\n%s", diff)
			}
			if err := got.Err(); (err == nil) != (r.Status == wire.StatusOK) {
				t.Errorf("Reply{%v}.Err() = %v", r.Status, err)
			}
		})
	}
}

func TestControlRoundTrip(t *testing.T) {
	for name, m := range goldenControls() {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := wire.WriteControl(&buf, m); err != nil {
				t.Fatalf("WriteControl = %v", err)
			}
			got, err := wire.ReadControl(&buf)
			if err != nil {
				t.Fatalf("ReadControl = %v", err)
			}
			if diff := cmp.Diff(m, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("round trip mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// WriteReply cuts a message that is too long, on a rune boundary.
func TestWriteReplyCutsLongMessage(t *testing.T) {
	long := strings.Repeat("é", wire.MaxReplySize) // 2 bytes a rune
	var buf bytes.Buffer
	if err := wire.WriteReply(&buf, wire.Reply{Status: wire.StatusDenied, Message: long}); err != nil {
		t.Fatalf("WriteReply = %v", err)
	}
	if buf.Len() > wire.MaxReplySize {
		t.Errorf("encoded size = %d; want at most %d", buf.Len(), wire.MaxReplySize)
	}
	got, err := wire.ReadReply(&buf)
	if err != nil {
		t.Fatalf("ReadReply = %v", err)
	}
	if want := long[:wire.MaxReplySize-4]; got.Message != want {
		t.Errorf("message = %d bytes; want the first %d bytes", len(got.Message), len(want))
	}
}

func TestEncodeRefuses(t *testing.T) {
	headers := []struct {
		name string
		h    wire.Header
	}{
		{"kind 0", wire.Header{}},
		{"kind 5", wire.Header{Kind: 5, Target: "a/b"}},
		{"field too long", wire.Header{Kind: wire.KindDial, Target: strings.Repeat("x", 256)}},
		{"not UTF-8", wire.Header{Kind: wire.KindDial, Caller: "\xff"}},
	}
	for _, tt := range headers {
		if b, err := wire.AppendHeader(nil, tt.h); err == nil {
			t.Errorf("%s: AppendHeader = %x, nil; want an error", tt.name, b)
		}
		if err := wire.WriteHeader(&bytes.Buffer{}, tt.h); err == nil {
			t.Errorf("%s: WriteHeader = nil; want an error", tt.name)
		}
	}
	replies := []struct {
		name string
		r    wire.Reply
	}{
		{"too long", wire.Reply{Message: strings.Repeat("x", wire.MaxReplySize-3)}},
		{"not UTF-8", wire.Reply{Status: wire.StatusDenied, Message: "\xc3"}},
	}
	for _, tt := range replies {
		if b, err := wire.AppendReply(nil, tt.r); err == nil {
			t.Errorf("%s: AppendReply = %x, nil; want an error", tt.name, b)
		}
	}
	big := wire.Control{Type: wire.MsgWelcome, Message: strings.Repeat("x", wire.MaxControlSize)}
	if err := wire.WriteControl(&bytes.Buffer{}, big); err == nil {
		t.Errorf("WriteControl(%d-byte message) = nil; want an error", len(big.Message))
	}
}
