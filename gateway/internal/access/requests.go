package access

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tunnelhq/tunnel/pkg/store"
)

// Just-in-time access requests: who may ask for a role, who may decide,
// who may end a grant early, and how long a window is. The grants
// themselves join a user's roles in roles().
//
// The rules:
//   - anyone not locked may ask for an existing role they do not hold;
//   - a request is decided by a holder of a role whose Approve lists the
//     requested role, never by the requester; the approving roles are the
//     ones the approver holds for good (a role held through a request
//     approves nothing, so that grants cannot chain), and the admin role
//     alone does not approve: an admin who should approve holds an
//     approving role, so every approval is a second person's, on record;
//   - an approved grant is ended early (revoked) by someone who could have
//     approved it, by an admin, or by the requester giving it up;
//   - the window starts at the approval and lasts what was asked, at most
//     the role's cap (its MaxTTL, at most the cluster's).

// PendingTTL is how long a request waits for a decision before it expires.
const PendingTTL = 24 * time.Hour

// Refusal is an access-request step refused, with the sentence to show.
type Refusal struct{ Msg string }

func (r *Refusal) Error() string { return r.Msg }

func refusal(format string, args ...any) error { return &Refusal{Msg: fmt.Sprintf(format, args...)} }

// CheckRequest decides whether u may ask for role for d.
func (d *Decider) CheckRequest(ctx context.Context, u store.User, role string, dur time.Duration) (store.Role, error) {
	if u.Locked {
		return store.Role{}, refusal("your account is locked")
	}
	r, err := d.Store.GetRole(ctx, role)
	if errors.Is(err, store.ErrNotFound) {
		return store.Role{}, refusal("there is no role %s (an admin lists them with tunnel admin roles ls)", role)
	}
	if err != nil {
		return store.Role{}, err
	}
	if slices.Contains(u.Roles, role) {
		return store.Role{}, refusal("you already hold role %s", role)
	}
	if dur <= 0 {
		return store.Role{}, refusal("the duration must be positive, as in --for 2h")
	}
	// One pending request per role: a second would only ask the
	// approvers twice.
	pending, err := d.Store.ListRequests(ctx, store.RequestFilter{User: u.Name, States: []store.RequestState{store.RequestPending}})
	if err != nil {
		return store.Role{}, err
	}
	now := d.now()
	for _, p := range pending {
		if p.Role == role && now.Before(p.PendingUntil) {
			return store.Role{}, refusal("you already asked for role %s (request %s, waiting for a decision until %s): wait for it, or tell an approver",
				role, p.ID, p.PendingUntil.UTC().Format(time.RFC3339))
		}
	}
	return r, nil
}

// Approving returns the roles whose requests u may decide: the Approve
// lists of the roles u holds for good.
func (d *Decider) Approving(ctx context.Context, u store.User) ([]string, error) {
	if u.Locked {
		return nil, nil
	}
	var out []string
	for _, rn := range u.Roles {
		r, err := d.Store.GetRole(ctx, rn)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read role %s: %w", rn, err)
		}
		out = append(out, r.Approve...)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Approver is what one user may do with access requests: read once
// (their approving roles), asked for many requests (a listing).
type Approver struct {
	User  store.User
	Admin bool
	// Roles are the roles whose requests User may decide (Approving).
	Roles []string
}

// Approver reads what u (admin: u holds the admin API) may do with
// requests.
func (d *Decider) Approver(ctx context.Context, u store.User, admin bool) (Approver, error) {
	roles, err := d.Approving(ctx, u)
	if err != nil {
		return Approver{}, err
	}
	return Approver{User: u, Admin: admin, Roles: roles}, nil
}

// CanDecide says whether a may approve or deny r; a Refusal says why not.
func (a Approver) CanDecide(r store.AccessRequest) error {
	if a.User.Name == r.User {
		return refusal("you cannot approve or deny your own request: ask someone who holds a role with --approve %s", r.Role)
	}
	if !slices.Contains(a.Roles, r.Role) {
		return refusal("none of your roles may decide requests for role %s: it takes a role added with --approve %s", r.Role, r.Role)
	}
	if r.State != store.RequestPending {
		if r.DecidedBy != "" {
			return refusal("request %s was %s by %s already", r.ID, r.State, r.DecidedBy)
		}
		return refusal("request %s is %s already", r.ID, r.State)
	}
	return nil
}

// CanRevoke says whether a may end the approved request r early: an
// approver of its role, an admin, or its requester giving it up.
func (a Approver) CanRevoke(r store.AccessRequest) error {
	if r.State != store.RequestApproved {
		return refusal("request %s is %s, not approved: only an approved request can be revoked", r.ID, r.State)
	}
	if a.Admin || a.User.Name == r.User || slices.Contains(a.Roles, r.Role) {
		return nil
	}
	return refusal("only an approver of role %s, an admin or %s may revoke request %s", r.Role, r.User, r.ID)
}

// MayView reports whether a may see r: their own, one of a role they
// approve, or any for an admin.
func (a Approver) MayView(r store.AccessRequest) bool {
	return a.Admin || a.User.Name == r.User || slices.Contains(a.Roles, r.Role)
}

// CheckDecide decides whether u may approve or deny r. A Refusal says why
// not.
func (d *Decider) CheckDecide(ctx context.Context, u store.User, r store.AccessRequest) error {
	a, err := d.Approver(ctx, u, false)
	if err != nil {
		return err
	}
	return a.CanDecide(r)
}

// CheckRevoke decides whether u (admin: u holds the admin API) may end the
// approved request r early.
func (d *Decider) CheckRevoke(ctx context.Context, u store.User, admin bool, r store.AccessRequest) error {
	a, err := d.Approver(ctx, u, admin)
	if err != nil {
		return err
	}
	return a.CanRevoke(r)
}

// MayView reports whether u may see r.
func (d *Decider) MayView(ctx context.Context, u store.User, admin bool, r store.AccessRequest) (bool, error) {
	a, err := d.Approver(ctx, u, admin)
	return a.MayView(r), err
}

// Window is the window an approval at now grants for r: from now for what
// was asked, at most the role's cap.
func (d *Decider) Window(role store.Role, r store.AccessRequest, now time.Time) (start, end time.Time) {
	return now, now.Add(min(r.Duration, d.roleTTL(role)))
}
