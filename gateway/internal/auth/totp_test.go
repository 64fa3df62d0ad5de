package auth

import (
	"bytes"
	"encoding/base32"
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/pquerna/otp/totp"

	"github.com/tunnelhq/tunnel/pkg/api"
)

// rfcSecret is the SHA-1 key of the RFC 6238 test vectors,
// "12345678901234567890", in base32.
const rfcSecret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"

func TestNewSecret(t *testing.T) {
	raw := bytes.Repeat([]byte{0xa5}, 20)
	secret, uri, err := NewSecret("Tunnel", "alice@example.com", bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("NewSecret: %v", err)
	}
	if want := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(raw); secret != want {
		t.Errorf("secret = %q; want %q", secret, want)
	}
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatalf("url.Parse(%q): %v", uri, err)
	}
	if u.Scheme != "otpauth" || u.Host != "totp" || u.Path != "/Tunnel:alice@example.com" {
		t.Errorf("uri = %q; want otpauth://totp/Tunnel:alice@example.com?...", uri)
	}
	q := u.Query()
	for k, want := range map[string]string{
		"secret": secret, "issuer": "Tunnel", "algorithm": "SHA1", "digits": "6", "period": "30",
	} {
		if got := q.Get(k); got != want {
			t.Errorf("uri %s = %q; want %q", k, got, want)
		}
	}

	// A secret from NewSecret works with MatchStep.
	now := time.Unix(1_700_000_000, 0)
	code, err := totp.GenerateCode(secret, now)
	if err != nil {
		t.Fatal(err)
	}
	if step, ok, err := MatchStep(secret, code, now); !ok || err != nil || step != Step(now) {
		t.Errorf("MatchStep(new secret) = %d, %v, %v; want %d, true, nil", step, ok, err, Step(now))
	}

	if _, _, err := NewSecret("", "alice", nil); err == nil {
		t.Errorf("NewSecret with no issuer succeeded; want error")
	}
	if _, _, err := NewSecret("Tunnel", "alice", bytes.NewReader(raw[:10])); err == nil {
		t.Errorf("NewSecret with a short random source succeeded; want error")
	}
}

func TestStep(t *testing.T) {
	tests := []struct {
		unix int64
		want int64
	}{
		{0, 0},
		{29, 0},
		{30, 1},
		{59, 1},
		{1_111_111_109, 37_037_036},
		{-1, -1},
		{-30, -1},
		{-31, -2},
	}
	for _, tc := range tests {
		if got := Step(time.Unix(tc.unix, 0)); got != tc.want {
			t.Errorf("Step(%d) = %d; want %d", tc.unix, got, tc.want)
		}
	}
	if got, want := Step(time.Unix(59, 999_999_999)), int64(1); got != want {
		t.Errorf("Step(59.999…) = %d; want %d", got, want)
	}
}

func TestMatchStepRFC6238(t *testing.T) {
	// RFC 6238 appendix B, SHA-1, truncated to six digits.
	tests := []struct {
		unix int64
		code string
	}{
		{59, "287082"},
		{1111111109, "081804"},
		{1111111111, "050471"},
		{1234567890, "005924"},
		{2000000000, "279037"},
		{20000000000, "353130"},
	}
	for _, tc := range tests {
		now := time.Unix(tc.unix, 0)
		step, ok, err := MatchStep(rfcSecret, tc.code, now)
		if err != nil || !ok || step != Step(now) {
			t.Errorf("MatchStep(%q at %d) = %d, %v, %v; want %d, true, nil", tc.code, tc.unix, step, ok, err, Step(now))
		}
	}
}

func TestMatchStepWindow(t *testing.T) {
	const secret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
	for _, now := range []time.Time{
		time.Unix(1_700_000_010, 0),              // inside a step
		time.Unix(1_700_000_010-10, 0),           // first second of a step
		time.Unix(1_700_000_010+19, 999_000_000), // last instant of a step
	} {
		cur := Step(now)
		for off := int64(-3); off <= 3; off++ {
			code, err := totp.GenerateCodeCustom(secret, time.Unix((cur+off)*Period, 0), totpOpts)
			if err != nil {
				t.Fatal(err)
			}
			step, ok, err := MatchStep(secret, code, now)
			if err != nil {
				t.Fatalf("MatchStep: %v", err)
			}
			wantOK := off >= -1 && off <= 1
			if ok != wantOK || (ok && step != cur+off) {
				t.Errorf("at %v, code of step %+d: MatchStep = %d, %v; want %d, %v", now.Unix(), off, step, ok, cur+off, wantOK)
			}
			// The same code typed with a space matches the same way.
			if step2, ok2, _ := MatchStep(secret, code[:3]+" "+code[3:], now); ok2 != ok || step2 != step {
				t.Errorf("spaced code: MatchStep = %d, %v; want %d, %v", step2, ok2, step, ok)
			}
		}
	}
}

func TestMatchStepErrors(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	if _, ok, err := MatchStep(rfcSecret, "12345", now); ok || !errors.Is(err, api.ErrInvalidCode) {
		t.Errorf("MatchStep(5 digits) = %v, %v; want false, api.ErrInvalidCode", ok, err)
	}
	if _, ok, err := MatchStep("not base32!", "123456", now); ok || err == nil {
		t.Errorf("MatchStep(bad secret) = %v, %v; want false, error", ok, err)
	}
}
