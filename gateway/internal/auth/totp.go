package auth

import (
	"crypto/subtle"
	"fmt"
	"io"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"github.com/tunnelhq/tunnel/pkg/api"
)

// Period is the length of a TOTP time step, in seconds.
const Period = 30

// TOTP settings every authenticator app supports.
const (
	secretSize = 20 // bytes, the RFC 4226 recommendation for HMAC-SHA1
	skew       = 1  // steps accepted either side of the current one
)

var totpOpts = totp.ValidateOpts{
	Period:    Period,
	Digits:    otp.Digits(api.CodeDigits),
	Algorithm: otp.AlgorithmSHA1,
}

// NewSecret generates a TOTP secret of 20 bytes read from rand (nil means
// crypto/rand.Reader) for account at issuer. It returns the secret in
// base32, as MatchStep takes it and as a user may type it, and the
// otpauth:// URI authenticator apps read from a QR code.
func NewSecret(issuer, account string, rand io.Reader) (secret, uri string, err error) {
	key, err := totp.Generate(totp.GenerateOpts{
		Issuer:      issuer,
		AccountName: account,
		Period:      Period,
		SecretSize:  secretSize,
		Digits:      otp.Digits(api.CodeDigits),
		Algorithm:   otp.AlgorithmSHA1,
		Rand:        rand,
	})
	if err != nil {
		return "", "", fmt.Errorf("generate TOTP secret: %w", err)
	}
	return key.Secret(), key.URL(), nil
}

// Step returns the TOTP time step containing t: its Unix time divided by
// Period, rounded down.
func Step(t time.Time) int64 {
	u := t.Unix()
	s := u / Period
	if u%Period < 0 {
		s-- // round towards minus infinity, as the codes are computed
	}
	return s
}

// MatchStep returns the time step, among the one containing now and the
// ones just before and after, whose code for secret (base32) is code. ok is
// false if none is. Every candidate is computed and compared in constant
// time, so the time taken says nothing about which one matched; if several
// do, the latest wins.
//
// code is normalised first (see api.NormalizeCode); an error means it is not a
// code (api.ErrInvalidCode) or the secret is not valid base32.
//
// MatchStep does not prevent replays: the caller must accept the step only
// if it is greater than the last one accepted for the user, recorded
// atomically (Store.AcceptTOTPStep).
func MatchStep(secret, code string, now time.Time) (step int64, ok bool, err error) {
	code, err = api.NormalizeCode(code)
	if err != nil {
		return 0, false, err
	}
	cur := Step(now)
	var found int64 // 1 once a candidate matched
	for s := cur - skew; s <= cur+skew; s++ {
		want, err := totp.GenerateCodeCustom(secret, time.Unix(s*Period, 0), totpOpts)
		if err != nil {
			return 0, false, fmt.Errorf("compute TOTP code: %w", err)
		}
		eq := int64(subtle.ConstantTimeCompare([]byte(want), []byte(code)))
		mask := -eq // all ones if eq, else zero
		step = step&^mask | s&mask
		found |= eq
	}
	if found == 0 {
		return 0, false, nil
	}
	return step, true, nil
}
