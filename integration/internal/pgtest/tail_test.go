package pgtest

import (
	"strings"
	"testing"
)

func TestTail(t *testing.T) {
	if got := tail("\n", 10, 100); got != "(empty)" {
		t.Errorf("empty: %q", got)
	}
	if got := tail("a\nb\n", 10, 100); got != "a\nb" {
		t.Errorf("short: %q", got)
	}
	if got := tail("1\n2\n3\n4\n", 2, 100); got != "[...]\n3\n4" {
		t.Errorf("lines: %q", got)
	}
	long := strings.Repeat("x", 50) + "\nlast line\n"
	if got := tail(long, 10, 20); got != "[...]\nlast line" {
		t.Errorf("bytes: %q", got)
	}
}
