// Package auth holds the gateway's login primitives: password hashing,
// TOTP codes, the lockout policy and a per-address rate limiter. It keeps
// no state of its own; the caller reads and writes users through the store
// (pkg/store) and applies these pieces in order.
//
// A login handler typically:
//
//  1. wraps the endpoint in [IPLimiter.Middleware], so one address cannot
//     hammer it;
//  2. reserves the attempt in the store's failure counter before checking
//     anything secret (Store.ReserveLoginAttempt, atomic, so concurrent
//     attempts cannot overtake it), and refuses the user name while the
//     [LockoutPolicy] says it is locked out; only a successful login
//     releases the reservation (Store.ClearLoginFailures);
//  3. checks the password with [Hasher.Verify], or, for an unknown user,
//     burns the same time with [Hasher.VerifyDummy] so that the answer does
//     not reveal which users exist; if Verify reports needsRehash, it stores
//     a fresh [Hasher.Hash] after the login succeeds;
//  4. normalises the code the user typed with [api.NormalizeCode] and finds its
//     time step with [MatchStep]; the store then accepts the step only if it
//     is greater than the last accepted one (Store.AcceptTOTPStep), which
//     makes each code single-use.
//
// Passwords are hashed with argon2id and stored as PHC strings
// ("$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>"); [DefaultParams] is the
// OWASP minimum and [HashPassword] refuses anything weaker. TOTP uses SHA-1,
// six digits and 30-second steps, which every authenticator app supports,
// and accepts the step before and after the current one to allow for clock
// drift.
//
// Time and randomness are injected (an io.Reader, a clock function or an
// explicit time), so tests can pin them.
package auth
