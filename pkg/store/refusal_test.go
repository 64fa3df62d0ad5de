package store

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestAgo(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                              "0s",
		999 * time.Millisecond:         "0s",
		59 * time.Second:               "59s",
		3*time.Minute + 59*time.Second: "3m",
		time.Hour:                      "1h",
		2*time.Hour + 5*time.Minute:    "2h5m",
		47*time.Hour + 59*time.Minute:  "47h59m",
		48 * time.Hour:                 "2d",
		30*24*time.Hour + 23*time.Hour: "30d",
	} {
		if got := ago(d); got != want {
			t.Errorf("ago(%v) = %q; want %q", d, got, want)
		}
	}
}

func TestCheckJoinToken(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tok := JoinToken{Agent: "web-1", ExpiresAt: now.Add(time.Minute)}
	if err := CheckJoinToken(tok, time.Time{}, now); err != nil {
		t.Errorf("a fresh token: %v", err)
	}
	err := CheckJoinToken(tok, now.Add(-time.Hour), now)
	if !errors.Is(err, ErrTokenUsed) || err.Error() != "join token already used on 2026-01-02 02:04 UTC: create a new one with tunnel admin tokens create --agent web-1" {
		t.Errorf("a used token: %v", err)
	}
	err = CheckJoinToken(tok, time.Time{}, now.Add(3*time.Minute))
	if !errors.Is(err, ErrTokenExpired) || !strings.HasPrefix(err.Error(), "join token expired 2m ago: ") {
		t.Errorf("an expired token: %v", err)
	}
}

func TestCheckSessionID(t *testing.T) {
	for _, id := range []string{"a", "Az09-_.~", strings.Repeat("x", MaxSessionID)} {
		if err := CheckSessionID(id); err != nil {
			t.Errorf("CheckSessionID(%q) = %v; want nil", id, err)
		}
	}
	for _, id := range []string{"", "a/b", "a b", "é", strings.Repeat("x", MaxSessionID+1)} {
		if err := CheckSessionID(id); err == nil {
			t.Errorf("CheckSessionID(%q) = nil; want a refusal", id)
		}
	}
}
