// Package policy decides whether a stream may flow: default deny, deny
// wins, every decision explained.
//
// Agents reach services through rules (tunnel admin policy allow|deny
// --from AGENT --to NODE/SERVICE); users reach them through their roles'
// service patterns. Use [Decide] for agents and [AllowedByPatterns] for
// users. Patterns are exact names, "*", or shell-style globs ("web-*",
// path.Match syntax) in each part.
package policy

import (
	"fmt"
	"path"
	"strings"
)

// Rule is one allow or deny rule.
type Rule struct {
	ID    int64
	Allow bool
	// From is an agent name pattern.
	From string
	// To is a "node/service" pattern.
	To string
}

// Decision is the outcome of a check.
type Decision struct {
	Allowed bool
	// Reason says why, in words for the audit log and the caller.
	Reason string
	// RuleID is the deciding rule, 0 when none matched.
	RuleID int64
}

// Match reports whether name matches pattern ("*", an exact name, or a
// path.Match glob). A malformed pattern matches nothing.
func Match(pattern, name string) bool {
	if pattern == "*" || pattern == name {
		return true
	}
	ok, err := path.Match(pattern, name)
	return err == nil && ok
}

// MatchTarget reports whether "node/service" matches a "node/service"
// pattern.
func MatchTarget(pattern, node, service string) bool {
	pn, ps, ok := strings.Cut(pattern, "/")
	if !ok {
		return false
	}
	return Match(pn, node) && Match(ps, service)
}

// Decide applies rules to a stream from agent to node/service: a matching
// deny rule refuses it whatever else matches; otherwise a matching allow
// rule lets it through; otherwise it is refused (default deny).
func Decide(rules []Rule, from, node, service string) Decision {
	var allow *Rule
	for i := range rules {
		r := &rules[i]
		if !Match(r.From, from) || !MatchTarget(r.To, node, service) {
			continue
		}
		if !r.Allow {
			return Decision{Reason: fmt.Sprintf("denied by rule %d (deny --from %s --to %s)", r.ID, r.From, r.To), RuleID: r.ID}
		}
		if allow == nil {
			allow = r
		}
	}
	if allow != nil {
		return Decision{Allowed: true, Reason: fmt.Sprintf("allowed by rule %d", allow.ID), RuleID: allow.ID}
	}
	return Decision{Reason: fmt.Sprintf("no rule allows %s to reach %s/%s (default deny): an admin can run tunnel admin policy allow --from %s --to %s/%s", from, node, service, from, node, service)}
}

// AllowedByPatterns reports whether any "node/service" pattern matches.
func AllowedByPatterns(patterns []string, node, service string) bool {
	for _, p := range patterns {
		if MatchTarget(p, node, service) {
			return true
		}
	}
	return false
}

// ValidPattern checks a "node/service" pattern.
func ValidPattern(p string) error {
	n, s, ok := strings.Cut(p, "/")
	if !ok || n == "" || s == "" || strings.Contains(s, "/") {
		return fmt.Errorf("%q is not NODE/SERVICE (for example db-1/postgres, or db-*/postgres)", p)
	}
	for _, part := range []string{n, s} {
		if _, err := path.Match(part, ""); err != nil {
			return fmt.Errorf("%q: malformed pattern %q", p, part)
		}
	}
	return nil
}
