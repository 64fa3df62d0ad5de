package sshcert

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    KeyID
		wantErr string
	}{
		{in: "user=bob serial=1f", want: KeyID{User: "bob", Serial: "1f"}},
		{in: "user=bob serial=1f session=abc", want: KeyID{User: "bob", Serial: "1f", Session: "abc"}},
		{in: "serial=1f user=bob extra=1 junk", want: KeyID{User: "bob", Serial: "1f"}},
		{in: "user=bob session=a=b", want: KeyID{User: "bob", Session: "a=b"}},
		{in: "user=bob user=alice", wantErr: "names user twice"},
		{in: "user=bob session=a session=b", wantErr: "names session twice"},
		{in: "user=bob x=1 x=2", wantErr: "names x twice"},
		{in: "user=bob session=", wantErr: "empty session"},
		{in: "user=bob serial=xyz", wantErr: "not hexadecimal"},
		{in: "user=bob serial=", wantErr: "not hexadecimal"},
		{in: "user=bob serial=11112222333344445", wantErr: "not hexadecimal"},
		{in: "user=bob session=caf\u00e9", wantErr: "not printable"},
		{in: "serial=1f", wantErr: "no valid user"},
		{in: "session=x", wantErr: "no valid user"},
		{in: "user=Bob!", wantErr: "no valid user"},
		{in: "host=web serial=1", wantErr: "no valid user"},
		{in: "", wantErr: "no valid user"},
	} {
		got, err := Parse(tc.in)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrKeyID) {
				t.Errorf("Parse(%q) = %+v, %v; want an ErrKeyID with %q", tc.in, got, err, tc.wantErr)
			}
		case err != nil || got != tc.want:
			t.Errorf("Parse(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

// TestFormatIsTheIssuedForm pins the bytes certs has always written, which
// OpenSSH servers log and older agents parse.
func TestFormatIsTheIssuedForm(t *testing.T) {
	for _, tc := range []struct {
		id   KeyID
		want string
	}{
		{KeyID{User: "alice", Serial: "1f"}, "user=alice serial=1f"},
		{KeyID{User: "alice", Serial: "1f", Session: "s-1"}, "user=alice serial=1f session=s-1"},
	} {
		if got := Format(tc.id); got != tc.want {
			t.Errorf("Format(%+v) = %q; want %q", tc.id, got, tc.want)
		}
	}
}

// FuzzParseKeyID: a valid key id survives Format then Parse unchanged, and
// whatever Parse accepts formats to a key id Parse reads identically.
func FuzzParseKeyID(f *testing.F) {
	for _, s := range []string{
		"user=bob serial=1f", "user=bob serial=1f session=abc", "serial=1f user=bob extra=1 junk",
		"user=bob user=alice", "user=bob session=", "", "user=a\tserial=0 session=\x7f", "user=bob session=a=b",
	} {
		f.Add(s, "bob", "1f", "s1")
	}
	f.Fuzz(func(t *testing.T, s, user, serial, session string) {
		if id, err := Parse(s); err == nil {
			again, err := Parse(Format(id))
			if err != nil || again != id {
				t.Fatalf("Parse(%q) = %+v; Parse(Format) = %+v, %v", s, id, again, err)
			}
		}
		x := KeyID{User: user, Serial: serial, Session: session}
		if !valid(x) {
			return // Format does not validate
		}
		if got, err := Parse(Format(x)); err != nil || got != x {
			t.Fatalf("Parse(Format(%+v)) = %+v, %v", x, got, err)
		}
	})
}

// valid reports whether x's fields are each what Parse accepts, so that
// Parse(Format(x)) must be x.
func valid(x KeyID) bool {
	id, err := Parse("user=" + x.User)
	if err != nil || id.User != x.User {
		return false
	}
	if x.Serial != "" && !isHex(x.Serial) {
		return false
	}
	return x.Session == "" || isPrintable(x.Session)
}
