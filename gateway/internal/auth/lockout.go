package auth

import "time"

// Lockout defaults.
const (
	DefaultMaxFailures = 5
	DefaultLockoutFor  = 15 * time.Minute
)

// LockoutPolicy says when repeated failed logins lock an account out.
//
// The store keeps the counter per user name, and every attempt reserves
// its place in it before any credential is checked
// (Store.ReserveLoginAttempt, one atomic step): the reservation that
// reaches MaxFailures begins the lockout, and while it lasts nothing more is
// reserved and no password or code is evaluated, however many attempts run
// at once. A reserved attempt counts as a failure unless the login
// succeeds, which clears the counter (Store.ClearLoginFailures). So at most
// MaxFailures guesses per name are ever evaluated per lockout period.
//
// The zero value means the defaults.
type LockoutPolicy struct {
	// MaxFailures is the number of consecutive failures that locks the
	// account out; zero or less means DefaultMaxFailures.
	MaxFailures int
	// LockoutFor is how long the account stays locked out; zero or less
	// means DefaultLockoutFor.
	LockoutFor time.Duration
}

// WithDefaults returns p with every zero (or negative) field replaced by
// its default.
func (p LockoutPolicy) WithDefaults() LockoutPolicy {
	if p.MaxFailures <= 0 {
		p.MaxFailures = DefaultMaxFailures
	}
	if p.LockoutFor <= 0 {
		p.LockoutFor = DefaultLockoutFor
	}
	return p
}
