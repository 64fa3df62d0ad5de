package doctor

import (
	"fmt"
	"slices"
	"strings"
)

// Severity says how bad a finding is.
type Severity string

// Severities, from good to bad.
const (
	// OK: the check passed; kept so that a daily diff shows what changed.
	OK Severity = "ok"
	// Info: worth knowing, nothing to fix (a check skipped, a version).
	Info Severity = "info"
	// Warn: should be fixed.
	Warn Severity = "warn"
	// Fail: must be fixed.
	Fail Severity = "fail"
)

// Grade is a letter from A (best) to F.
type Grade string

// Grades.
const (
	A Grade = "A"
	B Grade = "B"
	C Grade = "C"
	D Grade = "D"
	F Grade = "F"
)

var grades = []Grade{A, B, C, D, F}

// ParseGrade reads a grade letter (case-insensitive).
func ParseGrade(s string) (Grade, error) {
	g := Grade(strings.ToUpper(strings.TrimSpace(s)))
	if !slices.Contains(grades, g) {
		return "", fmt.Errorf("grade %q: want one of A, B, C, D, F", s)
	}
	return g, nil
}

// Below reports whether g is worse than min.
func (g Grade) Below(min Grade) bool { return rank(g) > rank(min) }

func rank(g Grade) int {
	if i := slices.Index(grades, g); i >= 0 {
		return i
	}
	return len(grades) - 1
}

// worst returns the worse of two grades; "" means no cap.
func worst(a, b Grade) Grade {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	case rank(a) >= rank(b):
		return a
	}
	return b
}

// Scope says what a finding is about.
type Scope string

// Scopes.
const (
	// Gateway findings are about the gateway and count toward the grade.
	Gateway Scope = "gateway"
	// Local findings are about this machine or about how the doctor got
	// its evidence; they advise and do not change the grade.
	Local Scope = "local"
)

// Finding is one result of one check.
type Finding struct {
	// Check is the check that made it: api, quic, udp, ssh, clock, dns.
	Check string `json:"check"`
	// ID names the condition, stable across runs and versions (for
	// example "tls.version.1.2", "cert.expiry"): diff on it.
	ID       string   `json:"id"`
	Severity Severity `json:"severity"`
	Scope    Scope    `json:"scope"`
	// Cap is the best grade this finding allows; empty: no limit.
	Cap Grade `json:"cap,omitempty"`
	// What was seen, one sentence.
	What string `json:"what"`
	// Fix says what to do; empty for OK and Info findings.
	Fix string `json:"fix,omitempty"`
}

// The constructors below pass What and Fix through printable: findings
// quote text the gateway sent.

// GradeOf is the grade a set of findings earns: A, lowered to the cap of
// every gateway finding.
func GradeOf(fs []Finding) Grade {
	g := A
	for _, f := range fs {
		if f.Scope == Local {
			continue
		}
		g = worst(g, f.Cap)
	}
	return g
}

func ok(check, id, what string) Finding {
	return Finding{Check: check, ID: id, Severity: OK, Scope: Gateway, What: printable(what)}
}

func info(check, id, what string) Finding {
	return Finding{Check: check, ID: id, Severity: Info, Scope: Gateway, What: printable(what)}
}

func warn(check, id string, cap Grade, what, fix string) Finding {
	return Finding{Check: check, ID: id, Severity: Warn, Scope: Gateway, Cap: cap, What: printable(what), Fix: printable(fix)}
}

func fail(check, id string, cap Grade, what, fix string) Finding {
	return Finding{Check: check, ID: id, Severity: Fail, Scope: Gateway, Cap: cap, What: printable(what), Fix: printable(fix)}
}

func local(f Finding) Finding {
	f.Scope = Local
	f.Cap = ""
	return f
}
