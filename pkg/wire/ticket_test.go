package wire

import "testing"

func TestTicket(t *testing.T) {
	a, b := NewTicket(), NewTicket()
	if a == b {
		t.Fatalf("two tickets are equal: %s", a)
	}
	for _, tk := range []string{a, b, "0123456789abcdef0123456789abcdef"} {
		if !ValidTicket(tk) {
			t.Errorf("ValidTicket(%q) = false", tk)
		}
	}
	for _, tk := range []string{"", "0123456789abcdef0123456789abcde", "0123456789abcdef0123456789abcdef0",
		"0123456789ABCDEF0123456789abcdef", "0123456789abcdef0123456789abcdeg", "../../../../../../../../etc/pass"} {
		if ValidTicket(tk) {
			t.Errorf("ValidTicket(%q) = true", tk)
		}
	}
}
