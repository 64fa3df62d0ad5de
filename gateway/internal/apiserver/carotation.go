package apiserver

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// CA rotation (tunnel admin ca rotate; docs/CA-ROTATION.md), per kind of
// CA, in three steps each safe to repeat and safe with several gateways on
// one store (the store refuses a second start, and every step emits a
// store.ChangeCA on which every gateway reloads its keys):
//
//   - start: a new key, stored inactive: every gateway trusts it alongside
//     the active one; agents and users get the new bundle with their next
//     certificate (renewal, login).
//   - activate: the new key signs. Refused while X.509 certificates issued
//     before the start are still valid (their holders may not trust the new
//     key yet), unless force.
//   - finish: the old key is removed: what it signed is refused
//     everywhere. Refused while a certificate it signed is still valid,
//     unless force.
//
// This gateway reloads its keys before answering, so that the caller's
// next request meets the new state here.

func (s *Server) routeCARotation(mux *http.ServeMux) {
	mux.Handle("GET "+api.PathAdminCARotation, s.admin(s.handleCARotationStatus))
	mux.Handle("POST "+api.PathAdminCARotation+"/{step}", s.admin(s.handleCARotate))
}

// caKinds are the kinds a request names.
func caKinds(kind string) ([]store.CertKind, error) {
	switch strings.ToLower(strings.TrimSpace(kind)) {
	case "", api.CAKindAll:
		return []store.CertKind{store.CertX509, store.CertSSHUser, store.CertSSHHost}, nil
	case api.CAKindX509:
		return []store.CertKind{store.CertX509}, nil
	case api.CAKindSSHUser:
		return []store.CertKind{store.CertSSHUser}, nil
	case api.CAKindSSHHost:
		return []store.CertKind{store.CertSSHHost}, nil
	}
	return nil, fmt.Errorf("CA kind %q is none of x509, ssh-user, ssh-host, all", kind)
}

func (s *Server) handleCARotationStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.caStatus(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// caStatus is the rotation status of every kind.
func (s *Server) caStatus(ctx context.Context) (api.CARotationStatus, error) {
	keys, err := s.Store.CAKeys(ctx)
	if err != nil {
		return api.CARotationStatus{}, err
	}
	var out api.CARotationStatus
	for _, kind := range []store.CertKind{store.CertX509, store.CertSSHUser, store.CertSSHHost} {
		ks, err := s.caKindStatus(ctx, keys, kind)
		if err != nil {
			return api.CARotationStatus{}, err
		}
		out.Kinds = append(out.Kinds, ks.out)
	}
	if s.Presence != nil && s.CA != nil {
		h := &api.CATrustHolders{Epoch: s.CA.Epoch()}
		for _, a := range s.Presence.Online() {
			h.Connected++
			if a.TrustEpoch >= h.Epoch {
				h.Current++
			}
		}
		out.Agents = h
	}
	return out, nil
}

// caKind is one kind's rotation as the store has it.
type caKind struct {
	out     api.CAKindStatus
	phase   store.CAPhase
	pending *store.CAKey
	old     []store.CAKey
}

func (s *Server) caKindStatus(ctx context.Context, keys []store.CAKey, kind store.CertKind) (caKind, error) {
	active, pending, old, phase, ok := store.CARotationOf(keys, string(kind))
	if !ok {
		return caKind{}, fmt.Errorf("the store holds no active %s CA key", kind)
	}
	now := s.now()
	k := caKind{phase: phase, pending: pending, old: old,
		out: api.CAKindStatus{Kind: string(kind), Phase: string(phase), Active: caKeyInfo(active)}}
	flag := "--kind " + string(kind)
	switch phase {
	case store.CAIdle:
		k.out.Next = "No rotation under way: tunnel admin ca rotate start " + flag + " begins one."
	case store.CAStarted:
		info := caKeyInfo(*pending)
		k.out.New = &info
		n, err := s.Store.CountValidCerts(ctx, store.CertX509, pending.CreatedAt, now)
		if err != nil {
			return caKind{}, err
		}
		k.out.Waiting = n
		if n > 0 {
			until, err := s.Store.LatestCertExpiry(ctx, store.CertX509, pending.CreatedAt)
			if err != nil {
				return caKind{}, err
			}
			k.out.WaitingUntil = until
			k.out.Next = fmt.Sprintf("%s issued before the start %s still valid: connected agents were sent the new trust bundle over their connection, the others get it when they connect or renew and users at their next login, at the latest by %s; then run tunnel admin ca rotate activate %s (--force if every agent is connected).",
				certificates(n), isAre(n), until.Format(time.RFC3339), flag)
		} else {
			k.out.Next = "Every agent and user has renewed or logged in since the start and has the new trust bundle: run tunnel admin ca rotate activate " + flag + "."
		}
	case store.CAActivated:
		for _, o := range old {
			k.out.Old = append(k.out.Old, caKeyInfo(o))
		}
		at, err := s.caActivatedAt(ctx, kind)
		if err != nil {
			return caKind{}, err
		}
		k.out.ActivatedAt = at
		n, err := s.Store.CountValidCerts(ctx, kind, at, now)
		if err != nil {
			return caKind{}, err
		}
		k.out.OldValid = n
		if n > 0 {
			until, err := s.Store.LatestCertExpiry(ctx, kind, at)
			if err != nil {
				return caKind{}, err
			}
			k.out.OldExpire = until
			k.out.Next = fmt.Sprintf("The old key signed %s still valid until %s: run tunnel admin ca rotate finish %s then.",
				certificates(n), until.Format(time.RFC3339), flag)
			if kind == store.CertSSHUser {
				k.out.Next += " Nodes running their own sshd must list the new user CA in TrustedUserCAKeys by then: tunnel ca --type ssh-user."
			}
		} else {
			k.out.Next = "Every certificate of the old key has expired: run tunnel admin ca rotate finish " + flag + "."
		}
	}
	return k, nil
}

// caActivatedAt is when the active key of kind began to sign; until it is
// known (a store changed by hand), now, which counts every certificate
// issued so far as the old key's.
func (s *Server) caActivatedAt(ctx context.Context, kind store.CertKind) (time.Time, error) {
	v, err := s.Store.GetMeta(ctx, store.CAActivatedMeta(string(kind)))
	if errors.Is(err, store.ErrNotFound) {
		return s.now(), nil
	}
	if err != nil {
		return time.Time{}, err
	}
	at, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return s.now(), nil
	}
	return at, nil
}

func caKeyInfo(k store.CAKey) api.CAKeyInfo {
	info := api.CAKeyInfo{Fingerprint: certs.CAFingerprint(k), CreatedAt: k.CreatedAt}
	if store.CertKind(k.Kind) == store.CertX509 {
		// The CA certificate only, not its cross-signature.
		if all, err := x509.ParseCertificates(k.Public); err == nil && len(all) > 0 {
			info.Public = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: all[0].Raw}))
		}
		return info
	}
	if pub, err := ssh.ParsePublicKey(k.Public); err == nil {
		info.Public = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
	}
	return info
}

func (s *Server) handleCARotate(w http.ResponseWriter, r *http.Request) {
	step := r.PathValue("step")
	if step != api.CARotateStart && step != api.CARotateActivate && step != api.CARotateFinish {
		s.fail(w, r, notFound(fmt.Sprintf("no rotation step %q: the steps are start, activate and finish", step)))
		return
	}
	var in api.CARotationRequest
	if err := api.Decode(r.Body, &in); err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	kinds, err := caKinds(in.Kind)
	if err != nil {
		s.fail(w, r, badRequest(err.Error()))
		return
	}
	ctx := r.Context()
	if step == api.CARotateStart && s.NewCAKey == nil {
		if b, err := s.Store.GetMeta(ctx, "key_backend"); err == nil && b == "vault" {
			s.fail(w, r, conflict("this cluster keeps its CA keys in Vault, and this gateway was started without it: start it with --vault-addr (docs/CA-ROTATION.md)"))
			return
		}
	}
	keys, err := s.Store.CAKeys(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	// Check every kind first: a refusal changes nothing.
	states := make([]caKind, len(kinds))
	var refusals []string
	for i, kind := range kinds {
		if states[i], err = s.caKindStatus(ctx, keys, kind); err != nil {
			s.fail(w, r, err)
			return
		}
		if msg := caRefusal(step, states[i], in.Force); msg != "" {
			refusals = append(refusals, msg)
		}
	}
	if len(refusals) > 0 {
		s.fail(w, r, conflict(strings.Join(refusals, " ")+" Nothing was changed."))
		return
	}
	done := map[string]string{}
	for i, kind := range kinds {
		msg, err := s.caStep(r, step, kind, states[i], in.Force)
		if err != nil {
			s.caReload(ctx)
			s.fail(w, r, err)
			return
		}
		done[string(kind)] = msg
	}
	s.caReload(ctx)
	st, err := s.caStatus(ctx)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	st.Done = done
	writeJSON(w, http.StatusOK, st)
}

// caRefusal says why step may not run for k now ("" if it may).
func caRefusal(step string, k caKind, force bool) string {
	kind := k.out.Kind
	switch step {
	case api.CARotateStart:
		if k.phase == store.CAActivated {
			return fmt.Sprintf("The previous rotation of the %s CA is not finished: run tunnel admin ca rotate finish --kind %s first.", kind, kind)
		}
	case api.CARotateActivate:
		switch {
		case k.phase == store.CAIdle:
			return fmt.Sprintf("No rotation of the %s CA is under way: run tunnel admin ca rotate start --kind %s first.", kind, kind)
		case k.phase == store.CAStarted && k.out.Waiting > 0 && !force:
			return fmt.Sprintf("The %s CA cannot sign with the new key yet: %s issued before the start %s still valid until %s, and their agents or users may not trust the new key; activate then, or repeat with --force.",
				kind, certificates(k.out.Waiting), isAre(k.out.Waiting), k.out.WaitingUntil.Format(time.RFC3339))
		}
	case api.CARotateFinish:
		switch {
		case k.phase == store.CAStarted:
			return fmt.Sprintf("The new %s CA key does not sign yet: run tunnel admin ca rotate activate --kind %s first.", kind, kind)
		case k.phase == store.CAActivated && k.out.OldValid > 0 && !force:
			return fmt.Sprintf("The old %s CA key signed %s still valid until %s: finish then, or repeat with --force to refuse them now.",
				kind, certificates(k.out.OldValid), k.out.OldExpire.Format(time.RFC3339))
		}
	}
	return ""
}

// caStep runs step for kind, whose state caRefusal accepted, and says
// what it did.
func (s *Server) caStep(r *http.Request, step string, kind store.CertKind, k caKind, force bool) (string, error) {
	ctx := r.Context()
	ev := func(t audit.Type) audit.Event {
		e := s.adminEvent(r, t, string(kind))
		e.Details = map[string]string{"active": k.out.Active.Fingerprint}
		if force {
			e.Details["force"] = "true"
		}
		return e
	}
	switch step {
	case api.CARotateStart:
		if k.phase == store.CAStarted {
			return "already started", nil
		}
		// A new key where the cluster keeps them: sealed here, or a new
		// Transit key in Vault (the store keeps its name).
		var held crypto.Signer
		if s.NewCAKey != nil {
			var err error
			if held, err = s.NewCAKey(ctx, kind); err != nil {
				return "", fmt.Errorf("new %s CA key: %w", kind, err)
			}
		}
		key, err := s.CA.NewCAKey(kind, s.Sealer, held)
		if err != nil {
			return "", err
		}
		e := ev(audit.CARotationStarted)
		e.Details["new"] = certs.CAFingerprint(key)
		err = s.Store.AddCAKey(ctx, key, e)
		if errors.Is(err, store.ErrExists) {
			return "already started", nil // by another gateway, just now
		}
		if err != nil {
			return "", err
		}
		return "started: new key " + e.Details["new"], nil
	case api.CARotateActivate:
		if k.phase == store.CAActivated {
			return "already activated", nil
		}
		e := ev(audit.CARotationActivated)
		e.Details["new"] = k.out.New.Fingerprint
		if err := s.Store.ActivateCAKey(ctx, string(kind), k.pending.Public, s.now(), e); err != nil {
			return "", err
		}
		return "activated: the new key " + k.out.New.Fingerprint + " signs", nil
	case api.CARotateFinish:
		if k.phase != store.CAActivated {
			return "nothing to finish", nil
		}
		var removed []string
		for _, o := range k.old {
			e := ev(audit.CARotationFinished)
			e.Details["removed"] = certs.CAFingerprint(o)
			e.Details["still_valid"] = strconv.Itoa(k.out.OldValid)
			err := s.Store.RemoveCAKey(ctx, string(kind), o.Public, e)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return "", err
			}
			removed = append(removed, e.Details["removed"])
		}
		return "finished: removed " + strings.Join(removed, ", "), nil
	}
	return "", nil
}

// caReload reloads this gateway's CA keys from the store (the others do
// on the change the store emitted).
func (s *Server) caReload(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := s.CA.Refresh(func() ([]store.CAKey, uint64, error) { return store.ReadCAKeys(ctx, s.Store) }); err != nil {
		s.log().Error("reload the CA keys after a rotation step; the reconciliation sweep retries", "err", err)
	}
}

// certificates is "1 certificate" or "N certificates".
func certificates(n int) string {
	if n == 1 {
		return "1 certificate"
	}
	return fmt.Sprintf("%d certificates", n)
}

// isAre is the verb for n certificates.
func isAre(n int) string {
	if n == 1 {
		return "is"
	}
	return "are"
}
