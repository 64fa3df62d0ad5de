package identity_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/identity"
)

func TestCanonicalName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"alice", "alice"},
		{"Alice", "alice"},
		{"ALICE", "alice"},
		{"  aLiCe\t\n", "alice"},
		{"web-1.PROD", "web-1.prod"},
		{"", ""},
		{"   ", ""},
		{"al ice", "al ice"}, // inner space kept, for ValidateName to refuse
		// Only ASCII is folded: these stay non-ASCII, so ValidateName
		// refuses them instead of a look-alike reaching an ASCII name.
		{"\u212Aaren", "\u212Aaren"}, // KELVIN SIGN, which Unicode lower-cases to 'k'
		{"\u0130nes", "\u0130nes"},   // LATIN CAPITAL LETTER I WITH DOT ABOVE
		{"ÅSA", "Åsa"},
		{"\u00a0bob\u3000", "bob"}, // Unicode white space is trimmed
	}
	for _, tc := range tests {
		if got := identity.CanonicalName(tc.in); got != tc.want {
			t.Errorf("CanonicalName(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

func TestValidateName(t *testing.T) {
	valid := []string{
		"a", "0", "alice", "web-1", "db_2", "host.example", "a.b.c", "a-", "a.", "a_",
		"9lives", "a--b", "a..b",
		strings.Repeat("a", identity.MaxNameLen),
	}
	for _, name := range valid {
		if err := identity.ValidateName("user", name); err != nil {
			t.Errorf("ValidateName(%q) = %v; want nil", name, err)
		}
	}
	invalid := []struct {
		name, why string
	}{
		{"", "empty"},
		{strings.Repeat("a", identity.MaxNameLen+1), "longer than 64"},
		{"Alice", "a-z"},
		{"-alice", "start with a letter or digit"},
		{".alice", "start with a letter or digit"},
		{"_alice", "start with a letter or digit"},
		{".", "start with a letter or digit"},
		{"..", "start with a letter or digit"},
		{"al ice", "a-z"},
		{" alice", "a-z"},
		{"alice\n", "a-z"},
		{"al\x00ice", "a-z"},
		{"alice/bob", "a-z"},
		{"alice@prod", "a-z"},
		{"alice:1", "a-z"},
		{"a,b", "a-z"},
		{"a*", "a-z"},
		{"al%69ce", "a-z"},
		{"ålice", "a-z"},
		{"\u212Aaren", "a-z"},  // KELVIN SIGN
		{"аlice", "a-z"},       // CYRILLIC SMALL LETTER A
		{"ａlice", "a-z"},       // FULLWIDTH LATIN SMALL LETTER A
		{"alice\u200b", "a-z"}, // ZERO WIDTH SPACE
		{"\xff", "a-z"},        // not UTF-8
		{strings.Repeat("é", 32), "a-z"},
		{strings.Repeat("é", 33), "longer than 64"}, // bytes, not characters
	}
	for _, tc := range invalid {
		err := identity.ValidateName("user", tc.name)
		if !errors.Is(err, identity.ErrInvalidName) {
			t.Errorf("ValidateName(%q) = %v; want an error wrapping ErrInvalidName", tc.name, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.why) || !strings.Contains(err.Error(), "user name") {
			t.Errorf("ValidateName(%q) = %q; want it to say %q about the user name", tc.name, err, tc.why)
		}
	}
}

func TestIDURI(t *testing.T) {
	tests := []struct {
		id   identity.ID
		want string
	}{
		{identity.ID{Cluster: "prod", Kind: identity.User, Name: "alice"}, "tunnel://prod/user/alice"},
		{identity.ID{Cluster: "prod", Kind: identity.Agent, Name: "db-1"}, "tunnel://prod/agent/db-1"},
		{identity.ID{Cluster: "eu.prod", Kind: identity.Gateway, Name: "gw_1"}, "tunnel://eu.prod/gateway/gw_1"},
	}
	for _, tc := range tests {
		if got := tc.id.String(); got != tc.want {
			t.Errorf("%+v.String() = %q; want %q", tc.id, got, tc.want)
		}
		u, err := url.Parse(tc.want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := identity.ParseURI(u)
		if err != nil || got != tc.id {
			t.Errorf("ParseURI(%q) = %+v, %v; want %+v", tc.want, got, err, tc.id)
		}
	}
}

func TestParseURIRefuses(t *testing.T) {
	tests := []struct {
		name, uri, why string
	}{
		{"wrong scheme", "https://prod/user/alice", "not a tunnel://"},
		{"no scheme", "//prod/user/alice", "not a tunnel://"},
		{"scheme look-alike", "tunnels://prod/user/alice", "not a tunnel://"},
		{"opaque", "tunnel:prod/user/alice", "not a tunnel://"},
		{"userinfo", "tunnel://alice@prod/user/alice", "not a tunnel://"},
		{"empty userinfo", "tunnel://@prod/user/alice", "not a tunnel://"},
		{"userinfo with password", "tunnel://alice:pw@prod/user/alice", "not a tunnel://"},
		{"query", "tunnel://prod/user/alice?admin=1", "not a tunnel://"},
		{"empty query", "tunnel://prod/user/alice?", "not a tunnel://"},
		{"fragment", "tunnel://prod/user/alice#x", "not a tunnel://"},
		{"port", "tunnel://prod:8443/user/alice", "cluster name"},
		{"empty port", "tunnel://prod:/user/alice", "cluster name"},
		{"IP host", "tunnel://[::1]/user/alice", "cluster name"},
		{"empty cluster", "tunnel:///user/alice", "cluster name is empty"},
		{"upper-case cluster", "tunnel://PROD/user/alice", "cluster name"},
		{"no path", "tunnel://prod", "is not /KIND/NAME"},
		{"root path", "tunnel://prod/", "is not /KIND/NAME"},
		{"kind only", "tunnel://prod/user", "is not /KIND/NAME"},
		{"empty name", "tunnel://prod/user/", "user name is empty"},
		{"empty kind", "tunnel://prod//alice", "unknown principal kind"},
		{"extra segment", "tunnel://prod/user/alice/x", "is not /KIND/NAME"},
		{"trailing slash", "tunnel://prod/user/alice/", "is not /KIND/NAME"},
		{"double slash", "tunnel://prod//user/alice", "is not /KIND/NAME"},
		{"dot segment", "tunnel://prod/./user/alice", "is not /KIND/NAME"},
		{"dot-dot name", "tunnel://prod/user/..", "user name"},
		{"unknown kind", "tunnel://prod/admin/alice", "unknown principal kind"},
		{"upper-case kind", "tunnel://prod/User/alice", "unknown principal kind"},
		{"upper-case name", "tunnel://prod/user/Alice", "user name"},
		{"invalid name", "tunnel://prod/user/-alice", "user name"},
		{"long name", "tunnel://prod/user/" + strings.Repeat("a", 65), "longer than 64"},
		{"encoded letter", "tunnel://prod/user/%61lice", "is not written as"},
		{"encoded slash", "tunnel://prod/user/alice%2Fbob", "is not /KIND/NAME"},
		{"encoded dot-dot", "tunnel://prod/user/%2e%2e", "user name"},
		{"encoded space", "tunnel://prod/user/a%20b", "user name"},
		{"encoded upper-case", "tunnel://prod/user/%41lice", "user name"},
		{"encoded digit", "tunnel://prod/user/web%2D1", "is not written as"},
		{"encoded kind", "tunnel://prod/%75ser/alice", "is not written as"},
		{"unicode name", "tunnel://prod/user/ålice", "user name"},
		{"Kelvin sign", "tunnel://prod/user/\u212Aaren", "user name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.Parse(tc.uri)
			if err != nil {
				t.Fatalf("url.Parse(%q): %v", tc.uri, err)
			}
			id, err := identity.ParseURI(u)
			if err == nil {
				t.Fatalf("ParseURI(%q) = %+v; want it refused", tc.uri, id)
			}
			if !strings.Contains(err.Error(), tc.why) || !strings.HasPrefix(err.Error(), "identity: ") {
				t.Errorf("ParseURI(%q) = %q; want an identity error saying %q", tc.uri, err, tc.why)
			}
		})
	}
	if _, err := identity.ParseURI(nil); err == nil {
		t.Errorf("ParseURI(nil) succeeded")
	}
	// Parts url.Parse never fills in, set by hand.
	for name, u := range map[string]*url.URL{
		"raw fragment":     {Scheme: "tunnel", Host: "prod", Path: "/user/alice", RawFragment: "%78"},
		"no leading slash": {Scheme: "tunnel", Host: "prod", Path: "user/alice"},
		"omitted host":     {Scheme: "tunnel", OmitHost: true, Path: "/user/alice"},
	} {
		if id, err := identity.ParseURI(u); err == nil {
			t.Errorf("%s: ParseURI(%#v) = %+v; want it refused", name, u, id)
		}
	}
}

// FuzzParseURI checks that whatever ParseURI accepts is exactly what
// ID.URI writes for a valid ID: every part validates and the URI
// round-trips through ID.String.
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"tunnel://prod/user/alice", "tunnel://prod/agent/db-1", "tunnel://eu.prod/gateway/gw_1",
		"tunnel://prod/user/%61lice", "tunnel://prod:1/user/alice", "tunnel://a@prod/user/alice",
		"tunnel://prod/user/alice?", "tunnel://prod/user/alice#", "tunnel://prod/user/alice/x",
		"TUNNEL://prod/user/alice", "tunnel:prod/user/alice", "tunnel://prod/user/\u212Aaren",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := url.Parse(s)
		if err != nil {
			return
		}
		id, err := identity.ParseURI(u)
		if err != nil {
			return
		}
		switch id.Kind {
		case identity.User, identity.Agent, identity.Gateway:
		default:
			t.Fatalf("ParseURI(%q) accepted kind %q", s, id.Kind)
		}
		if err := identity.ValidateName("cluster", id.Cluster); err != nil {
			t.Fatalf("ParseURI(%q) accepted cluster %q: %v", s, id.Cluster, err)
		}
		if err := identity.ValidateName(string(id.Kind), id.Name); err != nil {
			t.Fatalf("ParseURI(%q) accepted name %q: %v", s, id.Name, err)
		}
		if identity.CanonicalName(id.Cluster) != id.Cluster || identity.CanonicalName(id.Name) != id.Name {
			t.Fatalf("ParseURI(%q) accepted a name that is not canonical: %+v", s, id)
		}
		if u.String() != id.String() {
			t.Fatalf("ParseURI(%q) accepted %q, which is not ID.String() %q", s, u.String(), id.String())
		}
		u2, err := url.Parse(id.String())
		if err != nil {
			t.Fatalf("url.Parse(%q) of ID.String(): %v", id.String(), err)
		}
		id2, err := identity.ParseURI(u2)
		if err != nil || id2 != id {
			t.Fatalf("ID.String() %q parses back to %+v, %v; want %+v", id.String(), id2, err, id)
		}
	})
}

// FuzzCanonicalName checks that a name that validates after
// canonicalisation is plain ASCII, and that canonicalising is idempotent.
func FuzzCanonicalName(f *testing.F) {
	for _, s := range []string{"Alice", " bob ", "\u212Aaren", "ÅSA", "web-1.PROD", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c := identity.CanonicalName(s)
		if identity.CanonicalName(c) != c {
			t.Fatalf("CanonicalName is not idempotent on %q: %q then %q", s, c, identity.CanonicalName(c))
		}
		if identity.ValidateName("user", c) != nil {
			return
		}
		for i := range len(c) {
			if c[i] >= 0x80 || ('A' <= c[i] && c[i] <= 'Z') {
				t.Fatalf("CanonicalName(%q) = %q validates but is not lower-case ASCII", s, c)
			}
		}
		if !strings.EqualFold(strings.TrimSpace(s), c) {
			t.Fatalf("CanonicalName(%q) = %q is not the same name", s, c)
		}
	})
}
