package access

import (
	"context"
	"fmt"
	"time"

	"github.com/tunnelhq/tunnel/pkg/store"
)

// endedMemory is how long after its end an access request still names
// itself as the reason a live session or stream was closed.
const endedMemory = 10 * time.Minute

// grantEnded says which of user's access requests, ended lately, allowed
// what is being closed (matches tells by its role), as the sentence the
// user is shown: "your access request ID for role dba expired at ...".
// Of several, the one that ended last: it is what just changed (an older
// one, ended minutes ago, already closed what it allowed). "" when none
// did (or it cannot be told), and the caller gives the generic reason.
func (d *Decider) grantEnded(ctx context.Context, rd reader, user string, matches func(store.Role) bool) string {
	now := d.now()
	rs, err := d.Store.ListRequests(ctx, store.RequestFilter{User: user,
		States: []store.RequestState{store.RequestApproved, store.RequestExpired, store.RequestRevoked}, Limit: 50})
	if err != nil {
		d.log().Warn("read the access requests of a user", "user", user, "err", err)
		return ""
	}
	var best string
	var bestEnd time.Time
	for _, r := range rs {
		if r.Start.IsZero() {
			continue // expired while pending: never granted anything
		}
		var msg string
		var ended time.Time
		switch {
		case r.State == store.RequestApproved && !now.Before(r.End) && now.Sub(r.End) < endedMemory:
			msg, ended = fmt.Sprintf("your access request %s for role %s expired at %s", r.ID, r.Role, r.End.UTC().Format(time.RFC3339)), r.End
		case r.State == store.RequestExpired && now.Sub(r.EndedAt) < endedMemory:
			msg, ended = fmt.Sprintf("your access request %s for role %s expired at %s", r.ID, r.Role, r.End.UTC().Format(time.RFC3339)), r.EndedAt
		case r.State == store.RequestRevoked && now.Sub(r.EndedAt) < endedMemory:
			msg, ended = fmt.Sprintf("your access request %s for role %s was revoked by %s", r.ID, r.Role, r.EndedBy), r.EndedAt
			if r.EndReason != "" {
				msg += " (" + r.EndReason + ")"
			}
		default:
			continue
		}
		if best != "" && !ended.After(bestEnd) {
			continue
		}
		role, err := rd.GetRole(ctx, r.Role)
		if err != nil || !matches(role) {
			continue
		}
		best, bestEnd = msg, ended
	}
	return best
}
