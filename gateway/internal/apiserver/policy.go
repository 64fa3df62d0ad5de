package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/policy"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// checkNamePattern canonicalises and checks an agent or node pattern: "*",
// a valid name, or a glob (path.Match syntax) over name characters.
func checkNamePattern(what, p string) (string, error) {
	p = identity.CanonicalName(p)
	if p == "*" {
		return p, nil
	}
	if !strings.ContainsAny(p, "*?[") {
		return p, identity.ValidateName(what, p)
	}
	if _, err := path.Match(p, ""); err != nil {
		return "", fmt.Errorf("%s pattern %q is malformed (use names and globs such as web-*)", what, p)
	}
	for _, c := range p {
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.ContainsRune(".-_*?[]^!", c)
		if !ok {
			return "", fmt.Errorf("%s pattern %q may hold only a-z, 0-9, '.', '_', '-' and the glob characters *?[]", what, p)
		}
	}
	return p, nil
}

// checkTarget canonicalises and checks a NODE/SERVICE pattern. Node names
// are canonical (lower case); service names are kept as given.
func checkTarget(p string) (string, error) {
	p = strings.TrimSpace(p)
	if err := policy.ValidPattern(p); err != nil {
		return "", err
	}
	node, service, _ := strings.Cut(p, "/")
	node, err := checkNamePattern("node", node)
	if err != nil {
		return "", fmt.Errorf("%q: %w", p, err)
	}
	return node + "/" + service, nil
}

func policyOut(r store.PolicyRule) api.PolicyRule {
	return api.PolicyRule{ID: r.ID, Effect: string(r.Effect), From: r.From, To: r.To, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt}
}

func (s *Server) handleListPolicy(w http.ResponseWriter, r *http.Request) {
	rules, err := s.Store.ListPolicyRules(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]api.PolicyRule, 0, len(rules))
	for _, ru := range rules {
		out = append(out, policyOut(ru))
	}
	writeJSON(w, 200, out)
}

// checkRule validates and normalises a new rule from the API.
func checkRule(in api.PolicyRule) (store.PolicyRule, error) {
	if in.ID != 0 || in.CreatedBy != "" || !in.CreatedAt.IsZero() {
		return store.PolicyRule{}, errors.New("a new rule has only effect, from and to: the gateway sets its id, author and time")
	}
	effect := store.Effect(strings.ToLower(strings.TrimSpace(in.Effect)))
	if effect != store.Allow && effect != store.Deny {
		return store.PolicyRule{}, fmt.Errorf("effect %q is neither allow nor deny", in.Effect)
	}
	from, err := checkNamePattern("agent", in.From)
	if err != nil {
		return store.PolicyRule{}, err
	}
	to, err := checkTarget(in.To)
	if err != nil {
		return store.PolicyRule{}, err
	}
	return store.PolicyRule{Effect: effect, From: from, To: to}, nil
}

func (s *Server) handleAddPolicy(w http.ResponseWriter, r *http.Request) {
	var in api.PolicyRule
	if err := api.Decode(r.Body, &in); err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	rule, err := checkRule(in)
	if err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	rule.CreatedBy = callerFrom(r.Context()).user.Name
	rule.CreatedAt = s.now()
	ev := s.adminEvent(r, audit.PolicyAdded, fmt.Sprintf("%s %s -> %s", rule.Effect, rule.From, rule.To))
	ev.Details = map[string]string{"effect": string(rule.Effect), "from": rule.From, "to": rule.To}
	added, err := s.Store.AddPolicyRule(r.Context(), rule, ev)
	switch {
	case errors.Is(err, store.ErrExists):
		s.fail(w, r, conflict(fmt.Sprintf("the rule %s --from %s --to %s already exists (see tunnel admin policy ls)", rule.Effect, rule.From, rule.To)))
		return
	case err != nil:
		s.fail(w, r, err)
		return
	}
	if err := s.policyChanged(r, fmt.Sprintf("rule %d was added", added.ID)); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, policyOut(added))
}

func (s *Server) handleDeletePolicy(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		s.fail(w, r, badRequest(fmt.Sprintf("%q is not a rule id (a positive number, see tunnel admin policy ls)", r.PathValue("id"))))
		return
	}
	// The rule is read first so that its removal's event says what it was.
	rules, err := s.Store.ListPolicyRules(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var rule *store.PolicyRule
	for i := range rules {
		if rules[i].ID == id {
			rule = &rules[i]
		}
	}
	missing := notFound(fmt.Sprintf("no policy rule %d (see tunnel admin policy ls)", id))
	if rule == nil {
		s.fail(w, r, missing)
		return
	}
	ev := s.adminEvent(r, audit.PolicyRemoved, strconv.FormatInt(id, 10))
	ev.Details = map[string]string{"effect": string(rule.Effect), "from": rule.From, "to": rule.To}
	err = s.Store.DeletePolicyRule(r.Context(), id, ev)
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.fail(w, r, missing) // removed meanwhile
		return
	case err != nil:
		s.fail(w, r, err)
		return
	}
	if err := s.policyChanged(r, fmt.Sprintf("rule %d was removed", id)); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// policyChanged tells the relay (PolicyChanged: relay.Server.ReloadPolicy)
// that access changed: it reloads the policy rules and re-evaluates every
// live session and stream (access.Decider.Reevaluate). Called after every
// change of policy rules, roles and users' roles. The change is already
// recorded, so a failure says so: the caller must not retry it.
func (s *Server) policyChanged(r *http.Request, done string) error {
	if s.PolicyChanged == nil {
		return nil
	}
	// The change is made: a client that goes away now must not stop the
	// reload.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
	defer cancel()
	if err := s.PolicyChanged(ctx); err != nil {
		s.log().Error("reload policy after a change", "change", done, "err", err)
		return &httpError{500, api.CodeInternal, done + ", but this gateway could not reload its policy, so the change is not in effect yet (see the gateway log)"}
	}
	return nil
}
