package wire_test

import (
	"testing"

	"github.com/tunnelhq/tunnel/pkg/wire"
)

func TestCutReason(t *testing.T) {
	tests := []struct {
		code uint64
		want string
		ok   bool
	}{
		{wire.CutReset, "", false},
		{wire.CutCanceled, "", false},
		{wire.CutRevoked, "access revoked by an administrator", true},
		{wire.CutExpired, "your login certificate expired", true},
		{0x0, "", false},
		{0x99, "", false},
	}
	for _, tc := range tests {
		got, ok := wire.CutReason(tc.code)
		if got != tc.want || ok != tc.ok {
			t.Errorf("CutReason(%#x) = %q, %v; want %q, %v", tc.code, got, ok, tc.want, tc.ok)
		}
	}
}
