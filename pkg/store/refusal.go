package store

import (
	"fmt"
	"time"
)

// Refusal is an error for an operator that wraps a sentinel (ErrTokenUsed,
// ErrTokenExpired, ErrLocked, ErrNotFound) without showing the sentinel's
// text: callers branch with errors.Is and show Error as it is. Both store
// implementations refuse with the same sentences through the functions
// below.
type Refusal struct {
	Msg string
	Err error
}

func (r *Refusal) Error() string { return r.Msg }
func (r *Refusal) Unwrap() error { return r.Err }

// UnknownJoinToken refuses a token hash that is not recorded.
func UnknownJoinToken() error {
	return &Refusal{Msg: "unknown join token: check you copied it whole", Err: ErrNotFound}
}

// CheckJoinToken refuses t at now if it was used (usedAt not zero) or has
// expired, saying when and what to do; nil if it may be used.
func CheckJoinToken(t JoinToken, usedAt, now time.Time) error {
	if !usedAt.IsZero() {
		return &Refusal{Msg: fmt.Sprintf("join token already used on %s: %s", usedAt.UTC().Format("2006-01-02 15:04 UTC"), tokenRemedy(t.Agent)),
			Err: ErrTokenUsed}
	}
	if !now.Before(t.ExpiresAt) {
		return &Refusal{Msg: fmt.Sprintf("join token expired %s ago: %s", ago(now.Sub(t.ExpiresAt)), tokenRemedy(t.Agent)),
			Err: ErrTokenExpired}
	}
	return nil
}

// JoinTokenTaken refuses a token another enrolment used between the check
// and the write (a store's own guard; not reached under its locking).
func JoinTokenTaken(agent string) error {
	return &Refusal{Msg: "join token already used: " + tokenRemedy(agent), Err: ErrTokenUsed}
}

// AgentLockedForEnrolment refuses the enrolment of a locked agent.
func AgentLockedForEnrolment(agent string) error {
	return &Refusal{Msg: fmt.Sprintf("agent %s is locked by an administrator: it cannot enrol until it is unlocked", agent), Err: ErrLocked}
}

func tokenRemedy(agent string) string {
	return "create a new one with tunnel admin tokens create --agent " + agent
}

// ago says how long d is, roughly, for an operator: "40s", "3m", "2h5m",
// "3d".
func ago(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		h, m := int(d/time.Hour), int(d%time.Hour/time.Minute)
		if m == 0 {
			return fmt.Sprintf("%dh", h)
		}
		return fmt.Sprintf("%dh%dm", h, m)
	default:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	}
}

// MaxSessionID is the longest session ID a store accepts, in bytes.
const MaxSessionID = 128

// CheckSessionID refuses a session ID that is empty, longer than
// MaxSessionID or not URL-safe (RFC 3986 unreserved characters only).
func CheckSessionID(id string) error {
	ok := id != "" && len(id) <= MaxSessionID
	for _, c := range []byte(id) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == '~') {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("session ID %q is not URL-safe (letters, digits, '-', '_', '.', '~', at most %d bytes)", id, MaxSessionID)
	}
	return nil
}
