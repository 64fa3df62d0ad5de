package api

import (
	"errors"
	"strings"
	"unicode"
)

// CodeDigits is the length of a TOTP code.
const CodeDigits = 6

// ErrInvalidCode is returned for a code that is not six digits once spaces
// and dashes are removed. Its message is meant for the user.
var ErrInvalidCode = errors.New("the code must be 6 digits")

// NormalizeCode returns code without the spaces and dashes people type or
// paste ("123 456", "123-456"). What remains must be exactly six ASCII
// digits; otherwise it returns ErrInvalidCode.
func NormalizeCode(code string) (string, error) {
	var b strings.Builder
	for _, r := range code {
		if unicode.IsSpace(r) || r == '-' {
			continue
		}
		if r < '0' || r > '9' || b.Len() == CodeDigits {
			return "", ErrInvalidCode
		}
		b.WriteRune(r)
	}
	if b.Len() != CodeDigits {
		return "", ErrInvalidCode
	}
	return b.String(), nil
}
