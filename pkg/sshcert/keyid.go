package sshcert

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tunnelhq/tunnel/pkg/identity"
)

// KeyID is what a user certificate's key id says.
type KeyID struct {
	// User is the tunnel user the certificate is for; always set.
	User string
	// Serial is the certificate's serial in hex, as the issuer wrote it.
	Serial string
	// Session is the bastion session of a session certificate; empty for a
	// login certificate.
	Session string
}

// ErrKeyID: a key id that Parse refuses.
var ErrKeyID = errors.New("invalid key id")

// Format writes id as "user=NAME serial=HEX", followed by " session=ID"
// when id has a session. An empty serial is left out. Format does not
// validate: the issuer validates its request, and Parse whatever it reads.
func Format(id KeyID) string {
	s := "user=" + id.User
	if id.Serial != "" {
		s += " serial=" + id.Serial
	}
	if id.Session != "" {
		s += " session=" + id.Session
	}
	return s
}

// Parse reads a user certificate's key id. Fields are NAME=VALUE separated
// by spaces; unknown fields and words without "=" are ignored. Refused: a
// field named twice, a missing or invalid user, a serial that is not hex, an
// empty session or one with characters other than printable ASCII.
func Parse(s string) (KeyID, error) {
	var id KeyID
	seen := map[string]bool{}
	for _, f := range strings.Fields(s) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		if seen[k] {
			return KeyID{}, fmt.Errorf("%w: its key id names %s twice", ErrKeyID, printable(k))
		}
		seen[k] = true
		switch k {
		case "user":
			id.User = v
		case "serial":
			id.Serial = v
		case "session":
			id.Session = v
		}
	}
	if identity.ValidateName("user", id.User) != nil {
		return KeyID{}, fmt.Errorf("%w: its key id names no valid user", ErrKeyID)
	}
	if seen["serial"] && !isHex(id.Serial) {
		return KeyID{}, fmt.Errorf("%w: its key id has a serial that is not hexadecimal", ErrKeyID)
	}
	if seen["session"] {
		if id.Session == "" {
			return KeyID{}, fmt.Errorf("%w: its key id has an empty session", ErrKeyID)
		}
		if !isPrintable(id.Session) {
			return KeyID{}, fmt.Errorf("%w: its key id has a session that is not printable ASCII", ErrKeyID)
		}
	}
	return id, nil
}

// isHex: 1 to 16 hex digits, a 64-bit serial.
func isHex(s string) bool {
	if s == "" || len(s) > 16 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// isPrintable: printable ASCII without spaces.
func isPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return false
		}
	}
	return true
}

// printable quotes s for an error message when it is not plain.
func printable(s string) string {
	if isPrintable(s) && len(s) <= 64 {
		return s
	}
	return fmt.Sprintf("%.64q", s)
}
