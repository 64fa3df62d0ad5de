package pgstore

import (
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tunnelhq/tunnel/pkg/audit"
)

// ts is how a time is stored: UTC, truncated to microseconds (TIMESTAMPTZ
// keeps microseconds; the truncation is done here so that PostgreSQL never
// rounds).
func ts(t time.Time) time.Time { return audit.Normalize(t) }

// nullTS stores an optional time: NULL for the zero time.
func nullTS(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	v := ts(t)
	return &v
}

// utc turns a scanned time (pgx gives local time) into UTC.
func utc(t time.Time) time.Time { return t.UTC() }

// fromNull is the inverse of nullTS.
func fromNull(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

// list stores a list of strings as TEXT[]: never NULL, '{}' when empty.
func list(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// unlist is the inverse of list: an empty list comes back nil.
func unlist(l []string) []string {
	if len(l) == 0 {
		return nil
	}
	return l
}

// clean returns s as PostgreSQL text can hold it: invalid UTF-8 and NUL
// bytes become U+FFFD.
func clean(s string) string {
	if utf8.ValidString(s) && !strings.Contains(s, "\x00") {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// cleanEvent applies clean to every string of ev, before it is chained.
func cleanEvent(ev audit.Event) audit.Event {
	ev.Type = audit.Type(clean(string(ev.Type)))
	ev.Actor, ev.Subject, ev.Reason, ev.SourceIP = clean(ev.Actor), clean(ev.Subject), clean(ev.Reason), clean(ev.SourceIP)
	ev.Outcome = audit.Outcome(clean(string(ev.Outcome)))
	dirty := false
	for k, v := range ev.Details {
		if clean(k) != k || clean(v) != v {
			dirty = true
			break
		}
	}
	if dirty {
		d := make(map[string]string, len(ev.Details))
		for k, v := range ev.Details {
			d[clean(k)] = clean(v)
		}
		ev.Details = d
	}
	return ev
}
