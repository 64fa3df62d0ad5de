package vaultkeys

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	vault "github.com/hashicorp/vault/api"
)

// Sentinel errors, for errors.Is. The errors this package returns carry a
// full sentence; these only name the kind.
var (
	// ErrUnreachable: no answer from Vault (network, DNS, TLS, timeout).
	ErrUnreachable = errors.New("Vault cannot be reached")
	// ErrSealed: Vault answers but is sealed.
	ErrSealed = errors.New("Vault is sealed")
	// ErrToken: Vault refused the token (expired, revoked or unknown), or
	// the AppRole login was refused.
	ErrToken = errors.New("the Vault token was refused")
	// ErrPermission: the token is valid but its policies do not allow the
	// operation.
	ErrPermission = errors.New("the Vault token is not allowed to do this")
	// ErrKeyMissing: the Transit key does not exist.
	ErrKeyMissing = errors.New("the Vault key does not exist")
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("the Vault client is closed")
)

// Error is a failure talking to Vault. Its message is one sentence; Kind is
// one of the sentinels above, so errors.Is(err, ErrSealed) works, and Err is
// the underlying error from the Vault API.
type Error struct {
	Kind error
	Addr string // the Vault address
	Path string // the API path, without /v1/
	Key  string // the Transit key, if the operation was on one
	Err  error
}

func (e *Error) Error() string {
	switch e.Kind {
	case ErrUnreachable:
		return fmt.Sprintf("Vault at %s cannot be reached: %v", e.Addr, cause(e.Err))
	case ErrSealed:
		return fmt.Sprintf("Vault at %s is sealed: unseal it (vault operator unseal) and the gateway carries on by itself", e.Addr)
	case ErrToken:
		return fmt.Sprintf("the Vault token was refused (expired or revoked): %v; give a valid token or AppRole credentials", cause(e.Err))
	case ErrPermission:
		return fmt.Sprintf("Vault at %s refused %s: the token's policies do not allow it (permission denied)", e.Addr, e.Path)
	case ErrKeyMissing:
		if e.Key != "" {
			return fmt.Sprintf("Vault at %s has no Transit key %q (%s): create it (tunnel-gateway init --vault-addr creates the cluster's keys)", e.Addr, e.Key, e.Path)
		}
		return fmt.Sprintf("Vault at %s has nothing at %s: check the path, or create what should be there", e.Addr, e.Path)
	case ErrClosed:
		return "the Vault client is closed"
	}
	return fmt.Sprintf("Vault at %s: %s: %v", e.Addr, e.Path, cause(e.Err))
}

// Is reports whether target is e's kind.
func (e *Error) Is(target error) bool { return target == e.Kind }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// cause renders an API error in one line: the errors Vault listed, or the
// transport error.
func cause(err error) string {
	if err == nil {
		return "no detail"
	}
	var re *vault.ResponseError
	if errors.As(err, &re) {
		if len(re.Errors) > 0 {
			return fmt.Sprintf("HTTP %d: %s", re.StatusCode, flatten(strings.Join(re.Errors, "; ")))
		}
		return fmt.Sprintf("HTTP %d", re.StatusCode)
	}
	return flatten(err.Error())
}

// flatten makes Vault's multi-line error lists one line.
func flatten(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	s = strings.ReplaceAll(s, "\t", "")
	return strings.Join(strings.Fields(s), " ")
}

// classify turns an error from the Vault API into an *Error of the right
// kind. Errors it cannot place keep Kind nil (a plain failure). A 400 from
// Transit that is about the data (a bad ciphertext) is left to the caller:
// classify reports it with Kind nil.
func classify(addr, path, key string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	out := &Error{Addr: addr, Path: path, Key: key, Err: err}
	var re *vault.ResponseError
	switch {
	case errors.As(err, &re):
		msg := strings.ToLower(strings.Join(re.Errors, " "))
		switch {
		case re.StatusCode == http.StatusServiceUnavailable && strings.Contains(msg, "sealed"):
			out.Kind = ErrSealed
		case re.StatusCode == http.StatusForbidden && strings.Contains(msg, "invalid token"):
			out.Kind = ErrToken
		case re.StatusCode == http.StatusForbidden:
			out.Kind = ErrPermission
		case re.StatusCode == http.StatusNotFound,
			re.StatusCode == http.StatusBadRequest && strings.Contains(msg, "key not found"):
			out.Kind = ErrKeyMissing
		case re.StatusCode >= 500:
			// A proxy or a standby without an active node: as good as
			// unreachable for the caller.
			out.Kind = ErrUnreachable
		}
	case errors.Is(err, context.Canceled):
		// The caller gave up; not Vault's fault.
	default:
		// No HTTP answer: dial, DNS, TLS, timeout.
		out.Kind = ErrUnreachable
	}
	return out
}

// isDataError reports whether err is Vault refusing the data of a Transit
// request (HTTP 400 other than a missing key), such as a ciphertext that
// does not decrypt.
func isDataError(err error) bool {
	var e *Error
	if !errors.As(err, &e) || e.Kind != nil {
		return false
	}
	var re *vault.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusBadRequest
}
