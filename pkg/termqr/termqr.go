// Package termqr shows a TOTP enrolment on a terminal: the otpauth:// URI
// as a QR code an authenticator app can scan, and the secret for typing.
package termqr

import (
	"fmt"
	"io"
	"os"

	"github.com/mdp/qrterminal/v3"
	"golang.org/x/term"
)

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// PrintEnrollment writes the enrolment for user to w, with a QR code when w
// is a terminal.
func PrintEnrollment(w io.Writer, user, uri, secret string) {
	if !IsTerminal(w) {
		fmt.Fprintf(w, "TOTP enrolment for %s: enter the secret in an authenticator app, or make a QR code of the uri.\n", user)
	} else {
		fmt.Fprintf(w, "TOTP enrolment for %s: scan the QR code with an authenticator app, or enter the secret.\n", user)
		qrterminal.GenerateWithConfig(uri, qrterminal.Config{
			Level: qrterminal.L, Writer: w, HalfBlocks: true,
			BlackChar: qrterminal.BLACK_BLACK, WhiteChar: qrterminal.WHITE_WHITE,
			BlackWhiteChar: qrterminal.BLACK_WHITE, WhiteBlackChar: qrterminal.WHITE_BLACK,
			QuietZone: 1,
		})
	}
	fmt.Fprintf(w, "  secret: %s\n  uri:    %s\n", secret, uri)
}
