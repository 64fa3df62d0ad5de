// The code below is one wrapper per method of store.Store (generated once from
// pkg/store/store.go, then kept by hand): each times the call and counts
// what its audit events and certificates say. Methods added to the
// interface later are served by the embedded store, untimed, until a
// wrapper is added here.

package metrics

import (
	"context"
	"time"

	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// GetMeta is store.Store's, timed.
func (s *Store) GetMeta(ctx context.Context, key string) (string, error) {
	start := time.Now()
	v0, err := s.Store.GetMeta(ctx, key)
	s.observe("get_meta", start, err)
	return v0, err
}

// Initialize is store.Store's, timed.
func (s *Store) Initialize(ctx context.Context, meta map[string]string, keys []store.CAKey, ev audit.Event) error {
	start := time.Now()
	err := s.Store.Initialize(ctx, meta, keys, ev)
	s.observe("initialize", start, err)
	s.events(err, ev)
	return err
}

// CAKeys is store.Store's, timed.
func (s *Store) CAKeys(ctx context.Context) ([]store.CAKey, error) {
	start := time.Now()
	v0, err := s.Store.CAKeys(ctx)
	s.observe("ca_keys", start, err)
	return v0, err
}

// CreateUser is store.Store's, timed.
func (s *Store) CreateUser(ctx context.Context, u store.User, ev audit.Event) error {
	start := time.Now()
	err := s.Store.CreateUser(ctx, u, ev)
	s.observe("create_user", start, err)
	s.events(err, ev)
	return err
}

// GetUser is store.Store's, timed.
func (s *Store) GetUser(ctx context.Context, name string) (store.User, error) {
	start := time.Now()
	v0, err := s.Store.GetUser(ctx, name)
	s.observe("get_user", start, err)
	return v0, err
}

// ListUsers is store.Store's, timed.
func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	start := time.Now()
	v0, err := s.Store.ListUsers(ctx)
	s.observe("list_users", start, err)
	return v0, err
}

// DeleteUser is store.Store's, timed.
func (s *Store) DeleteUser(ctx context.Context, name string, ev audit.Event) error {
	start := time.Now()
	err := s.Store.DeleteUser(ctx, name, ev)
	s.observe("delete_user", start, err)
	s.events(err, ev)
	return err
}

// SetUserLocked is store.Store's, timed.
func (s *Store) SetUserLocked(ctx context.Context, name string, locked bool, ev audit.Event) error {
	start := time.Now()
	err := s.Store.SetUserLocked(ctx, name, locked, ev)
	s.observe("set_user_locked", start, err)
	s.events(err, ev)
	return err
}

// ResetMFA is store.Store's, timed.
func (s *Store) ResetMFA(ctx context.Context, name string, sealedSecret []byte, ev audit.Event) error {
	start := time.Now()
	err := s.Store.ResetMFA(ctx, name, sealedSecret, ev)
	s.observe("reset_mfa", start, err)
	s.events(err, ev)
	return err
}

// SetPasswordHash is store.Store's, timed.
func (s *Store) SetPasswordHash(ctx context.Context, name string, hash string, ev audit.Event) error {
	start := time.Now()
	err := s.Store.SetPasswordHash(ctx, name, hash, ev)
	s.observe("set_password_hash", start, err)
	s.events(err, ev)
	return err
}

// AcceptTOTPStep is store.Store's, timed.
func (s *Store) AcceptTOTPStep(ctx context.Context, name string, step int64) (bool, error) {
	start := time.Now()
	v0, err := s.Store.AcceptTOTPStep(ctx, name, step)
	s.observe("accept_totp_step", start, err)
	return v0, err
}

// LoginFailures is store.Store's, timed.
func (s *Store) LoginFailures(ctx context.Context, name string) (store.LoginFailures, error) {
	start := time.Now()
	v0, err := s.Store.LoginFailures(ctx, name)
	s.observe("login_failures", start, err)
	return v0, err
}

// ReserveLoginAttempt is store.Store's, timed.
func (s *Store) ReserveLoginAttempt(ctx context.Context, name string, now time.Time, max int, lockout time.Duration) (store.LoginFailures, error) {
	start := time.Now()
	v0, err := s.Store.ReserveLoginAttempt(ctx, name, now, max, lockout)
	s.observe("reserve_login_attempt", start, err)
	return v0, err
}

// ClearLoginFailures is store.Store's, timed.
func (s *Store) ClearLoginFailures(ctx context.Context, name string) error {
	start := time.Now()
	err := s.Store.ClearLoginFailures(ctx, name)
	s.observe("clear_login_failures", start, err)
	return err
}

// CreateRole is store.Store's, timed.
func (s *Store) CreateRole(ctx context.Context, r store.Role, ev audit.Event) error {
	start := time.Now()
	err := s.Store.CreateRole(ctx, r, ev)
	s.observe("create_role", start, err)
	s.events(err, ev)
	return err
}

// UpdateRole is store.Store's, timed.
func (s *Store) UpdateRole(ctx context.Context, r store.Role, ev audit.Event) error {
	start := time.Now()
	err := s.Store.UpdateRole(ctx, r, ev)
	s.observe("update_role", start, err)
	s.events(err, ev)
	return err
}

// SetUserRoles is store.Store's, timed.
func (s *Store) SetUserRoles(ctx context.Context, name string, roles []string, ev audit.Event) error {
	start := time.Now()
	err := s.Store.SetUserRoles(ctx, name, roles, ev)
	s.observe("set_user_roles", start, err)
	s.events(err, ev)
	return err
}

// GetRole is store.Store's, timed.
func (s *Store) GetRole(ctx context.Context, name string) (store.Role, error) {
	start := time.Now()
	v0, err := s.Store.GetRole(ctx, name)
	s.observe("get_role", start, err)
	return v0, err
}

// ListRoles is store.Store's, timed.
func (s *Store) ListRoles(ctx context.Context) ([]store.Role, error) {
	start := time.Now()
	v0, err := s.Store.ListRoles(ctx)
	s.observe("list_roles", start, err)
	return v0, err
}

// DeleteRole is store.Store's, timed.
func (s *Store) DeleteRole(ctx context.Context, name string, ev audit.Event) error {
	start := time.Now()
	err := s.Store.DeleteRole(ctx, name, ev)
	s.observe("delete_role", start, err)
	s.events(err, ev)
	return err
}

// RecordCertificates is store.Store's, timed.
func (s *Store) RecordCertificates(ctx context.Context, certs []store.IssuedCert, evs []audit.Event) error {
	start := time.Now()
	err := s.Store.RecordCertificates(ctx, certs, evs)
	s.observe("record_certificates", start, err)
	s.events(err, evs...)
	s.issued(err, certs)
	return err
}

// GetCertificate is store.Store's, timed.
func (s *Store) GetCertificate(ctx context.Context, kind store.CertKind, serial string) (store.IssuedCert, error) {
	start := time.Now()
	v0, err := s.Store.GetCertificate(ctx, kind, serial)
	s.observe("get_certificate", start, err)
	return v0, err
}

// AppendAudit is store.Store's, timed.
func (s *Store) AppendAudit(ctx context.Context, ev audit.Event) (audit.Event, error) {
	start := time.Now()
	v0, err := s.Store.AppendAudit(ctx, ev)
	s.observe("append_audit", start, err)
	s.events(err, ev)
	return v0, err
}

// AppendAudits is store.Store's, timed.
func (s *Store) AppendAudits(ctx context.Context, evs []audit.Event) ([]audit.Event, error) {
	start := time.Now()
	v0, err := s.Store.AppendAudits(ctx, evs)
	s.observe("append_audits", start, err)
	s.events(err, evs...)
	return v0, err
}

// ListAudit is store.Store's, timed.
func (s *Store) ListAudit(ctx context.Context, f store.AuditFilter) ([]audit.Event, error) {
	start := time.Now()
	v0, err := s.Store.ListAudit(ctx, f)
	s.observe("list_audit", start, err)
	return v0, err
}

// CreateJoinToken is store.Store's, timed.
func (s *Store) CreateJoinToken(ctx context.Context, t store.JoinToken, ev audit.Event) error {
	start := time.Now()
	err := s.Store.CreateJoinToken(ctx, t, ev)
	s.observe("create_join_token", start, err)
	s.events(err, ev)
	return err
}

// ConsumeJoinToken is store.Store's, timed.
func (s *Store) ConsumeJoinToken(ctx context.Context, hash string, now time.Time, ev audit.Event) (store.JoinToken, error) {
	start := time.Now()
	v0, err := s.Store.ConsumeJoinToken(ctx, hash, now, ev)
	s.observe("consume_join_token", start, err)
	s.events(err, ev)
	return v0, err
}

// GetAgent is store.Store's, timed.
func (s *Store) GetAgent(ctx context.Context, name string) (store.Agent, error) {
	start := time.Now()
	v0, err := s.Store.GetAgent(ctx, name)
	s.observe("get_agent", start, err)
	return v0, err
}

// ListAgents is store.Store's, timed.
func (s *Store) ListAgents(ctx context.Context) ([]store.Agent, error) {
	start := time.Now()
	v0, err := s.Store.ListAgents(ctx)
	s.observe("list_agents", start, err)
	return v0, err
}

// SetAgentLocked is store.Store's, timed.
func (s *Store) SetAgentLocked(ctx context.Context, name string, locked bool, ev audit.Event) error {
	start := time.Now()
	err := s.Store.SetAgentLocked(ctx, name, locked, ev)
	s.observe("set_agent_locked", start, err)
	s.events(err, ev)
	return err
}

// TouchAgent is store.Store's, timed.
func (s *Store) TouchAgent(ctx context.Context, name string, seen time.Time) error {
	start := time.Now()
	err := s.Store.TouchAgent(ctx, name, seen)
	s.observe("touch_agent", start, err)
	return err
}

// AddPolicyRule is store.Store's, timed.
func (s *Store) AddPolicyRule(ctx context.Context, r store.PolicyRule, ev audit.Event) (store.PolicyRule, error) {
	start := time.Now()
	v0, err := s.Store.AddPolicyRule(ctx, r, ev)
	s.observe("add_policy_rule", start, err)
	s.events(err, ev)
	return v0, err
}

// ListPolicyRules is store.Store's, timed.
func (s *Store) ListPolicyRules(ctx context.Context) ([]store.PolicyRule, error) {
	start := time.Now()
	v0, err := s.Store.ListPolicyRules(ctx)
	s.observe("list_policy_rules", start, err)
	return v0, err
}

// DeletePolicyRule is store.Store's, timed.
func (s *Store) DeletePolicyRule(ctx context.Context, id int64, ev audit.Event) error {
	start := time.Now()
	err := s.Store.DeletePolicyRule(ctx, id, ev)
	s.observe("delete_policy_rule", start, err)
	s.events(err, ev)
	return err
}

// AuditHead is store.Store's, timed.
func (s *Store) AuditHead(ctx context.Context) (string, error) {
	start := time.Now()
	v0, err := s.Store.AuditHead(ctx)
	s.observe("audit_head", start, err)
	return v0, err
}

// CreateSession is store.Store's, timed.
func (s *Store) CreateSession(ctx context.Context, sess store.Session, certs []store.IssuedCert, evs []audit.Event) error {
	start := time.Now()
	err := s.Store.CreateSession(ctx, sess, certs, evs)
	s.observe("create_session", start, err)
	s.events(err, evs...)
	s.issued(err, certs)
	return err
}

// GetSession is store.Store's, timed.
func (s *Store) GetSession(ctx context.Context, id string) (store.Session, error) {
	start := time.Now()
	v0, err := s.Store.GetSession(ctx, id)
	s.observe("get_session", start, err)
	return v0, err
}

// ListSessions is store.Store's, timed.
func (s *Store) ListSessions(ctx context.Context, f store.SessionFilter) ([]store.Session, error) {
	start := time.Now()
	v0, err := s.Store.ListSessions(ctx, f)
	s.observe("list_sessions", start, err)
	return v0, err
}

// EndSession is store.Store's, timed.
func (s *Store) EndSession(ctx context.Context, id string, state store.SessionState, reason string, at time.Time, ev audit.Event) (store.Session, error) {
	start := time.Now()
	v0, err := s.Store.EndSession(ctx, id, state, reason, at, ev)
	s.observe("end_session", start, err)
	s.events(err, ev)
	return v0, err
}

// AddSessionBytes is store.Store's, timed.
func (s *Store) AddSessionBytes(ctx context.Context, id string, in int64, out int64) error {
	start := time.Now()
	err := s.Store.AddSessionBytes(ctx, id, in, out)
	s.observe("add_session_bytes", start, err)
	return err
}

// RevokeCertificates is store.Store's, timed.
func (s *Store) RevokeCertificates(ctx context.Context, f store.RevokeFilter, at time.Time, ev audit.Event) ([]store.IssuedCert, error) {
	start := time.Now()
	v0, err := s.Store.RevokeCertificates(ctx, f, at, ev)
	s.observe("revoke_certificates", start, err)
	s.events(err, ev)
	s.revokedCertificates(err, v0)
	return v0, err
}

// RevokedCertificates is store.Store's, timed.
func (s *Store) RevokedCertificates(ctx context.Context, now time.Time) ([]store.IssuedCert, error) {
	start := time.Now()
	v0, err := s.Store.RevokedCertificates(ctx, now)
	s.observe("revoked_certificates", start, err)
	return v0, err
}

// SaveRecording is store.Store's, timed.
func (s *Store) SaveRecording(ctx context.Context, sessionID string, sealed []byte) error {
	start := time.Now()
	err := s.Store.SaveRecording(ctx, sessionID, sealed)
	s.observe("save_recording", start, err)
	return err
}

// GetRecording is store.Store's, timed.
func (s *Store) GetRecording(ctx context.Context, sessionID string) ([]byte, error) {
	start := time.Now()
	v0, err := s.Store.GetRecording(ctx, sessionID)
	s.observe("get_recording", start, err)
	return v0, err
}

// UpsertGateway is store.Store's, timed.
func (s *Store) UpsertGateway(ctx context.Context, g store.Gateway) error {
	start := time.Now()
	err := s.Store.UpsertGateway(ctx, g)
	s.observe("upsert_gateway", start, err)
	return err
}

// ListGateways is store.Store's, timed.
func (s *Store) ListGateways(ctx context.Context) ([]store.Gateway, error) {
	start := time.Now()
	v0, err := s.Store.ListGateways(ctx)
	s.observe("list_gateways", start, err)
	return v0, err
}

// DeleteGateway is store.Store's, timed.
func (s *Store) DeleteGateway(ctx context.Context, id string) error {
	start := time.Now()
	err := s.Store.DeleteGateway(ctx, id)
	s.observe("delete_gateway", start, err)
	return err
}
