// Package identity names the principals of a cluster (users, agents,
// gateways) and maps them to and from the URI SAN carried in X.509
// certificates: tunnel://CLUSTER/KIND/NAME.
//
// Use [CanonicalName] on every user name that comes from outside before
// looking it up, counting failures against it, or signing it.
package identity

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Kind is the kind of principal.
type Kind string

// Principal kinds.
const (
	User    Kind = "user"
	Agent   Kind = "agent"
	Gateway Kind = "gateway"
)

// Scheme is the URI scheme of identity SANs.
const Scheme = "tunnel"

// MaxNameLen bounds user, role, agent and cluster names.
const MaxNameLen = 64

// ErrInvalidName is wrapped by name validation errors.
var ErrInvalidName = errors.New("invalid name")

// CanonicalName trims surrounding white space and folds ASCII upper case to
// lower case. Names are restricted to ASCII by ValidateName, so that is full
// case folding; non-ASCII letters are left alone (Unicode lower-casing would
// turn the Kelvin sign into a 'k'), so that ValidateName refuses them rather
// than letting a look-alike spelling reach an ASCII name.
func CanonicalName(name string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + ('a' - 'A')
		}
		return r
	}, strings.TrimSpace(name))
}

// ValidateName checks a canonical name: 1 to 64 characters from a-z, 0-9,
// '.', '_' and '-', starting with a letter or digit. These names are safe as
// OS logins, SSH principals, URI path segments and DNS labels' cousins.
func ValidateName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%w: %s name is empty", ErrInvalidName, what)
	}
	if len(name) > MaxNameLen {
		return fmt.Errorf("%w: %s name is longer than %d characters", ErrInvalidName, what, MaxNameLen)
	}
	for i, c := range name {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '.' || c == '_' || c == '-')
		if !ok {
			return fmt.Errorf("%w: %s name %q may hold only a-z, 0-9, '.', '_' and '-', and must start with a letter or digit", ErrInvalidName, what, name)
		}
	}
	return nil
}

// ID identifies one principal of one cluster.
type ID struct {
	Cluster string
	Kind    Kind
	Name    string
}

// URI returns the SAN URI, tunnel://CLUSTER/KIND/NAME.
func (id ID) URI() *url.URL {
	return &url.URL{Scheme: Scheme, Host: id.Cluster, Path: "/" + string(id.Kind) + "/" + id.Name}
}

func (id ID) String() string { return id.URI().String() }

// ParseURI parses a SAN URI made by ID.URI and validates every part. It
// accepts only the form ID.URI writes: no user information, port, query
// (not even an empty one), fragment, percent-encoding or further path
// segment.
func ParseURI(u *url.URL) (ID, error) {
	if u == nil || u.Scheme != Scheme || u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.ForceQuery ||
		u.Fragment != "" || u.RawFragment != "" {
		return ID{}, fmt.Errorf("identity: not a %s:// identity URI", Scheme)
	}
	path, rooted := strings.CutPrefix(u.Path, "/")
	parts := strings.Split(path, "/")
	if !rooted || len(parts) != 2 {
		return ID{}, fmt.Errorf("identity: URI path %q is not /KIND/NAME", u.Path)
	}
	id := ID{Cluster: u.Host, Kind: Kind(parts[0]), Name: parts[1]}
	switch id.Kind {
	case User, Agent, Gateway:
	default:
		return ID{}, fmt.Errorf("identity: unknown principal kind %q", parts[0])
	}
	if err := ValidateName("cluster", id.Cluster); err != nil {
		return ID{}, fmt.Errorf("identity: %w", err)
	}
	if err := ValidateName(string(id.Kind), id.Name); err != nil {
		return ID{}, fmt.Errorf("identity: %w", err)
	}
	if got := u.String(); got != id.String() {
		// Percent-encoding, or anything else url.URL can hold beside the
		// parts checked above.
		return ID{}, fmt.Errorf("identity: URI %q is not written as %q", got, id.String())
	}
	return id, nil
}
