package termqr

import (
	"bytes"
	"strings"
	"testing"
)

// Off a terminal there is no QR code, so the text does not ask to scan one.
func TestPrintEnrollmentOffATerminal(t *testing.T) {
	var b bytes.Buffer
	PrintEnrollment(&b, "alice", "otpauth://totp/x:alice?secret=ABC", "ABC")
	out := b.String()
	if strings.Contains(out, "scan the QR code") || strings.Contains(out, "█") {
		t.Errorf("off a terminal, PrintEnrollment printed a QR code or asked to scan one:\n%s", out)
	}
	for _, want := range []string{"TOTP enrolment for alice", "  secret: ABC\n", "  uri:    otpauth://totp/x:alice?secret=ABC\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("PrintEnrollment printed:\n%s\nwant %q", out, want)
		}
	}
}
