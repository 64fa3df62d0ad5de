package certs

import "errors"

// Sentinel errors, always returned wrapped in a message that says what was
// wrong. Test for them with errors.Is.
var (
	// ErrNoPrincipals means an SSH certificate request named no principals.
	// OpenSSH reads an empty principal list as "any user", so it is refused.
	ErrNoPrincipals = errors.New("no principals")
	// ErrTTLTooLong means a requested lifetime exceeds the role's or the
	// cluster's maximum. Lifetimes are refused, never shortened.
	ErrTTLTooLong = errors.New("certificate lifetime too long")
	// ErrUnsupportedKey means a public key is not Ed25519 or ECDSA P-256, or
	// is a certificate rather than a key.
	ErrUnsupportedKey = errors.New("unsupported key type")
	// ErrInvalidRequest means a certificate request or a parsed input is
	// malformed.
	ErrInvalidRequest = errors.New("invalid certificate request")
)
