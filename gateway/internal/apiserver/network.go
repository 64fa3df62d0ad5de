package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/netguard"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// The cluster's network rules (tunnel admin network; docs/NETWORK.md):
// allow and deny lists of source networks per listener, enforced by every
// gateway at accept (pkg/netguard's ACL). A change is recorded with its
// audit event, applied on this gateway before the answer (NetworkChanged)
// and on the others through the store's change feed.
//
// Lockout guard: a change after which the caller's own address would be
// refused on the API (the address this request came from) is refused
// with 409 unless force is set, so that an administrator cannot cut
// themselves off by a typo. Loopback gets no exemption of its own: a rule
// that names it is applied like any other (the guard protects the caller,
// wherever they connect from).

func (s *Server) routeNetwork(mux *http.ServeMux) {
	mux.Handle("GET "+api.PathAdminNetwork, s.admin(s.handleListNetwork))
	mux.Handle("POST "+api.PathAdminNetwork, s.admin(s.handleAddNetwork))
	mux.Handle("DELETE "+api.PathAdminNetwork+"/{id}", s.admin(s.handleDeleteNetwork))
}

// ListenerScope is the netguard scope of a NetworkRule.Listener.
func ListenerScope(listener string) netguard.Scope {
	switch listener {
	case store.ListenerAPI:
		return netguard.ScopeAPI
	case store.ListenerQUIC:
		return netguard.ScopeQUIC
	case store.ListenerSSH:
		return netguard.ScopeSSH
	case store.ListenerAll:
		return netguard.ScopeAll
	}
	return 0
}

// ACLRules turns stored rules into netguard's; a malformed stored rule is
// skipped (the store refuses them, so only tampering makes one).
func ACLRules(rules []store.NetworkRule) []netguard.ACLRule {
	out := make([]netguard.ACLRule, 0, len(rules))
	for _, r := range rules {
		p, err := netip.ParsePrefix(r.CIDR)
		sc := ListenerScope(r.Listener)
		if err != nil || sc == 0 || r.Effect != store.Allow && r.Effect != store.Deny {
			continue
		}
		out = append(out, netguard.ACLRule{Deny: r.Effect == store.Deny, Prefix: p, Scope: sc})
	}
	return out
}

func networkOut(r store.NetworkRule) api.NetworkRule {
	return api.NetworkRule{ID: r.ID, Effect: string(r.Effect), CIDR: r.CIDR, Listener: r.Listener,
		Comment: r.Comment, CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt}
}

func (s *Server) handleListNetwork(w http.ResponseWriter, r *http.Request) {
	rules, err := s.Store.ListNetworkRules(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := make([]api.NetworkRule, 0, len(rules))
	for _, ru := range rules {
		out = append(out, networkOut(ru))
	}
	writeJSON(w, 200, out)
}

// checkNetworkRule validates and canonicalises a rule from the API.
func checkNetworkRule(in api.NetworkRuleRequest) (store.NetworkRule, error) {
	effect := store.Effect(strings.ToLower(strings.TrimSpace(in.Effect)))
	if effect != store.Allow && effect != store.Deny {
		return store.NetworkRule{}, fmt.Errorf("effect %q is neither allow nor deny", in.Effect)
	}
	p, err := store.ParseNetworkCIDR(strings.TrimSpace(in.CIDR))
	if err != nil {
		return store.NetworkRule{}, err
	}
	listener := strings.ToLower(strings.TrimSpace(in.Listener))
	if listener == "" {
		listener = store.ListenerAll
	}
	r := store.NetworkRule{Effect: effect, CIDR: p.String(), Listener: listener, Comment: strings.TrimSpace(in.Comment)}
	if strings.ContainsAny(r.Comment, "\r\n\x00") {
		return store.NetworkRule{}, errors.New("the comment must be one line")
	}
	if err := store.CheckNetworkRule(r); err != nil {
		return store.NetworkRule{}, err
	}
	return r, nil
}

// lockoutCheck refuses a change after which rules would refuse the
// caller's address on the API, unless force.
func (s *Server) lockoutCheck(r *http.Request, rules []store.NetworkRule, force bool, what string) error {
	ip := remoteAddr(r)
	if force || !ip.IsValid() {
		return nil
	}
	acl := netguard.NewACL(nil)
	defer acl.Close()
	acl.Set(ACLRules(rules))
	if acl.Allowed(ip, netguard.ScopeAPI) {
		return nil
	}
	return conflict(fmt.Sprintf("%s would refuse your own address %s on the API and lock you out: check the rule, or repeat with --force if that is what you want", what, ip))
}

func (s *Server) handleAddNetwork(w http.ResponseWriter, r *http.Request) {
	var in api.NetworkRuleRequest
	if err := api.Decode(r.Body, &in); err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	rule, err := checkNetworkRule(in)
	if err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	current, err := s.Store.ListNetworkRules(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	desc := fmt.Sprintf("%s %s on %s", rule.Effect, rule.CIDR, rule.Listener)
	if err := s.lockoutCheck(r, append(current, rule), in.Force, "the rule "+desc); err != nil {
		s.fail(w, r, err)
		return
	}
	rule.CreatedBy = callerFrom(r.Context()).user.Name
	rule.CreatedAt = s.now()
	ev := s.adminEvent(r, audit.NetworkRuleAdded, desc)
	ev.Details = map[string]string{"effect": string(rule.Effect), "cidr": rule.CIDR, "listener": rule.Listener}
	if rule.Comment != "" {
		ev.Details["comment"] = rule.Comment
	}
	if in.Force {
		ev.Details["force"] = "true"
	}
	added, err := s.Store.AddNetworkRule(r.Context(), rule, ev)
	switch {
	case errors.Is(err, store.ErrExists):
		s.fail(w, r, conflict(fmt.Sprintf("the rule %s already exists (see tunnel admin network ls)", desc)))
		return
	case err != nil:
		s.fail(w, r, err)
		return
	}
	if err := s.networkChanged(r, fmt.Sprintf("network rule %d was added", added.ID)); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, networkOut(added))
}

func (s *Server) handleDeleteNetwork(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		s.fail(w, r, badRequest(fmt.Sprintf("%q is not a rule id (a positive number, see tunnel admin network ls)", r.PathValue("id"))))
		return
	}
	force, _ := strconv.ParseBool(r.URL.Query().Get("force"))
	rules, err := s.Store.ListNetworkRules(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var rule *store.NetworkRule
	rest := make([]store.NetworkRule, 0, len(rules))
	for i := range rules {
		if rules[i].ID == id {
			rule = &rules[i]
			continue
		}
		rest = append(rest, rules[i])
	}
	missing := notFound(fmt.Sprintf("no network rule %d (see tunnel admin network ls)", id))
	if rule == nil {
		s.fail(w, r, missing)
		return
	}
	// Removing an allow rule can shrink an allow-list to none of the
	// caller's networks.
	if err := s.lockoutCheck(r, rest, force, fmt.Sprintf("removing rule %d", id)); err != nil {
		s.fail(w, r, err)
		return
	}
	ev := s.adminEvent(r, audit.NetworkRuleRemoved, fmt.Sprintf("%s %s on %s", rule.Effect, rule.CIDR, rule.Listener))
	ev.Details = map[string]string{"id": strconv.FormatInt(id, 10), "effect": string(rule.Effect), "cidr": rule.CIDR, "listener": rule.Listener}
	err = s.Store.DeleteNetworkRule(r.Context(), id, ev)
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.fail(w, r, missing)
		return
	case err != nil:
		s.fail(w, r, err)
		return
	}
	if err := s.networkChanged(r, fmt.Sprintf("network rule %d was removed", id)); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// networkChanged applies the rules on this gateway (NetworkChanged) before
// the answer, so that the caller's next connection meets them; other
// gateways apply them from the store's change feed.
func (s *Server) networkChanged(r *http.Request, done string) error {
	if s.NetworkChanged == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
	defer cancel()
	if err := s.NetworkChanged(ctx); err != nil {
		s.log().Error("apply network rules after a change", "change", done, "err", err)
		return &httpError{500, api.CodeInternal, done + ", but this gateway could not apply the rules yet (see the gateway log); it retries at its next reconciliation"}
	}
	return nil
}
