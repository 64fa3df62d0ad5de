package api

import (
	"errors"
	"strings"
	"testing"
	"unicode"
)

func TestNormalizeCode(t *testing.T) {
	tests := []struct {
		in, want string // want "" means ErrInvalidCode
	}{
		{"123456", "123456"},
		{" 123 456 ", "123456"},
		{"123-456", "123456"},
		{"\t123456\n", "123456"},
		{"1 2-3\u00a04\u20035\r\n6", "123456"}, // no-break and em spaces
		{"--123456--", "123456"},
		{"000000", "000000"},
		{"１２３４５６", ""}, // fullwidth digits
		{"١٢٣٤٥٦", ""}, // Arabic-Indic digits
		{"12345", ""},
		{"1234567", ""},
		{"12345a", ""},
		{"123_456", ""},
		{"123.456", ""},
		{"+123456", ""},
		{"", ""},
		{"   ", ""},
		{"123456\x00", ""},
		{"12345\xff", ""},
	}
	for _, tc := range tests {
		got, err := NormalizeCode(tc.in)
		if tc.want == "" {
			if !errors.Is(err, ErrInvalidCode) {
				t.Errorf("NormalizeCode(%q) = %q, %v; want ErrInvalidCode", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("NormalizeCode(%q) = %q, %v; want %q, nil", tc.in, got, err, tc.want)
		}
	}
	if got := ErrInvalidCode.Error(); got != "the code must be 6 digits" {
		t.Errorf("ErrInvalidCode = %q; want the user-facing message", got)
	}
}

func FuzzNormalizeCode(f *testing.F) {
	for _, s := range []string{"123456", " 123 456 ", "123-456", "１２３４５６", "12345", "1234567", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := NormalizeCode(s)
		stripped := strings.Map(func(r rune) rune {
			if unicode.IsSpace(r) || r == '-' {
				return -1
			}
			return r
		}, s)
		valid := len(stripped) == 6 && strings.Trim(stripped, "0123456789") == ""
		if err != nil {
			if !errors.Is(err, ErrInvalidCode) || valid {
				t.Fatalf("NormalizeCode(%q) = %v; want %q", s, err, stripped)
			}
			return
		}
		if !valid || got != stripped {
			t.Fatalf("NormalizeCode(%q) = %q; want an error or %q", s, got, stripped)
		}
		if again, err := NormalizeCode(got); again != got || err != nil {
			t.Fatalf("NormalizeCode(%q) = %q, %v; want it unchanged", got, again, err)
		}
	})
}
