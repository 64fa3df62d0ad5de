// Package audit defines the gateway's audit events and the hash chain that
// makes the log tamper-evident.
//
// Every event carries the hash of the event before it (PrevHash) and its own
// hash (Hash) computed over its canonical encoding and PrevHash. A store
// appends events with [Chain] inside one transaction, and [Verify] walks a
// log from its first event and reports the first broken link: an edited
// event (its hash no longer matches), a deleted one (a gap in Seq or a
// PrevHash that points elsewhere) or a reordered one.
//
// Events never carry secrets: callers put outcomes and reasons in them, not
// passwords, codes or keys.
package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"
)

// Type names what happened.
type Type string

// Event types. New ones are added as features arrive; the string is what
// operators grep for, so it never changes once shipped.
const (
	LoginSuccess      Type = "login.success"
	LoginFailure      Type = "login.failure"
	CertIssued        Type = "cert.issued"
	UserCreated       Type = "user.created"
	UserDeleted       Type = "user.deleted"
	UserLocked        Type = "user.locked"
	UserUnlocked      Type = "user.unlocked"
	UserMFAReset      Type = "user.mfa_reset"
	RoleCreated       Type = "role.created"
	RoleUpdated       Type = "role.updated"
	RoleDeleted       Type = "role.deleted"
	UserRolesChanged  Type = "user.roles_changed"
	ClusterInit       Type = "cluster.init"
	AdminDenied       Type = "admin.denied"
	PasswordRehashed  Type = "user.password_rehashed"
	LoginLockoutBegin Type = "login.lockout"
	TokenCreated      Type = "token.created"
	AgentEnrolled     Type = "agent.enrolled"
	AgentRenewed      Type = "agent.renewed"
	AgentLocked       Type = "agent.locked"
	AgentUnlocked     Type = "agent.unlocked"
	AgentConnected    Type = "agent.connected"
	AgentDenied       Type = "agent.denied"
	PolicyAdded       Type = "policy.added"
	PolicyRemoved     Type = "policy.removed"
	StreamAllowed     Type = "stream.allowed"
	StreamDenied      Type = "stream.denied"
	// StreamUnused: a direct stream decided ahead of its use (its
	// stream.allowed has the detail ahead=true) that its caller never
	// started; the grant ended unused.
	StreamUnused   Type = "stream.unused"
	SessionCreated Type = "session.created"
	SessionEnded   Type = "session.ended"
	SessionRevoked Type = "session.revoked"
	CertRevoked    Type = "cert.revoked"
	RecordingSaved Type = "recording.saved"
)

// Outcome says whether the action succeeded.
type Outcome string

// Outcomes.
const (
	Success Outcome = "success"
	Failure Outcome = "failure"
)

// Event is one entry of the audit log.
type Event struct {
	// Seq is the position in the log, starting at 1. Set by the store.
	Seq int64 `json:"seq"`
	// Time is when the event happened, in UTC, truncated to microseconds so
	// that it survives a round trip through any SQL store unchanged.
	Time time.Time `json:"time"`
	Type Type      `json:"type"`
	// Actor is who did it: a user name, "system", or "anonymous".
	Actor string `json:"actor"`
	// Subject is what it was done to: a user, role or certificate serial.
	Subject string  `json:"subject,omitempty"`
	Outcome Outcome `json:"outcome"`
	// Reason explains a failure in words fit for an operator.
	Reason   string `json:"reason,omitempty"`
	SourceIP string `json:"source_ip,omitempty"`
	// Details holds further non-secret facts (serial, principals, TTL...).
	Details map[string]string `json:"details,omitempty"`

	// PrevHash and Hash are hex SHA-256 values set by Chain.
	PrevHash string `json:"prev_hash"`
	Hash     string `json:"hash"`
}

// GenesisHash is the PrevHash of the first event of a log.
const GenesisHash = "0000000000000000000000000000000000000000000000000000000000000000"

// Chain fills in ev.Seq, ev.PrevHash and ev.Hash so that ev follows prev.
// prev is nil for the first event of a log. The time is normalised to UTC
// microseconds before hashing.
func Chain(prev *Event, ev Event) Event {
	ev.Time = Normalize(ev.Time)
	if prev == nil {
		ev.Seq = 1
		ev.PrevHash = GenesisHash
	} else {
		ev.Seq = prev.Seq + 1
		ev.PrevHash = prev.Hash
	}
	ev.Hash = ev.computeHash()
	return ev
}

// Normalize returns t in UTC truncated to microseconds, the precision every
// store keeps.
func Normalize(t time.Time) time.Time {
	return t.UTC().Truncate(time.Microsecond)
}

// computeHash hashes the canonical encoding of every field but Hash:
// each field length-prefixed, details sorted by key.
func (ev *Event) computeHash() string {
	h := sha256.New()
	var buf [8]byte
	writeField := func(s string) {
		binary.BigEndian.PutUint64(buf[:], uint64(len(s)))
		h.Write(buf[:])
		h.Write([]byte(s))
	}
	writeField("tunnel-audit-v1")
	writeField(fmt.Sprint(ev.Seq))
	writeField(ev.Time.UTC().Format(time.RFC3339Nano))
	writeField(string(ev.Type))
	writeField(ev.Actor)
	writeField(ev.Subject)
	writeField(string(ev.Outcome))
	writeField(ev.Reason)
	writeField(ev.SourceIP)
	keys := slices.Sorted(maps.Keys(ev.Details))
	writeField(fmt.Sprint(len(keys)))
	for _, k := range keys {
		writeField(k)
		writeField(ev.Details[k])
	}
	writeField(ev.PrevHash)
	return hex.EncodeToString(h.Sum(nil))
}

// ErrBrokenChain is wrapped by the error Verify returns for a tampered log.
var ErrBrokenChain = errors.New("audit chain broken")

// BrokenLinkError describes the first event at which the chain breaks.
type BrokenLinkError struct {
	Seq    int64  // the Seq of the offending event (or the expected one, for a gap)
	Reason string // what is wrong, in words
}

func (e *BrokenLinkError) Error() string {
	return fmt.Sprintf("audit chain broken at event %d: %s", e.Seq, e.Reason)
}

func (e *BrokenLinkError) Unwrap() error { return ErrBrokenChain }

// Verify walks events, which must be the whole log in storage order, and
// returns nil if every link holds, or a *BrokenLinkError for the first one
// that does not. headHash is the hash the store recorded for the last
// event, "" for an empty log; it detects events deleted from the end of the
// log. An empty headHash with events present is a broken chain, not a
// reason to skip that check: blanking the recorded head would otherwise
// hide any number of events deleted from the end.
func Verify(events []Event, headHash string) error {
	var prev *Event
	for i := range events {
		ev := &events[i]
		wantSeq := int64(1)
		wantPrev := GenesisHash
		if prev != nil {
			wantSeq = prev.Seq + 1
			wantPrev = prev.Hash
		}
		switch {
		case ev.Seq != wantSeq:
			return &BrokenLinkError{Seq: wantSeq, Reason: fmt.Sprintf("expected event %d, found event %d (an event was deleted or reordered)", wantSeq, ev.Seq)}
		case ev.PrevHash != wantPrev:
			return &BrokenLinkError{Seq: ev.Seq, Reason: "previous-hash link does not match the event before it (an event was deleted, inserted or reordered)"}
		case ev.computeHash() != ev.Hash:
			return &BrokenLinkError{Seq: ev.Seq, Reason: "content does not match its hash (the event was edited)"}
		}
		prev = ev
	}
	if prev == nil {
		if headHash != "" {
			return &BrokenLinkError{Seq: 1, Reason: "the log ends before the last recorded event (events were deleted from the end)"}
		}
		return nil
	}
	if headHash == "" {
		return &BrokenLinkError{Seq: events[0].Seq, Reason: fmt.Sprintf("the recorded head is empty but the log holds %d events (the head was blanked, so events may have been deleted from the end)", len(events))}
	}
	if prev.Hash != headHash {
		// A head that is an earlier event's hash means events were added
		// after it, not deleted.
		for i := range events {
			if events[i].Hash == headHash {
				return &BrokenLinkError{Seq: events[i].Seq + 1, Reason: "the log goes on after the last recorded event (events were added without updating the recorded head)"}
			}
		}
		return &BrokenLinkError{Seq: prev.Seq + 1, Reason: "the log ends before the last recorded event (events were deleted from the end)"}
	}
	return nil
}
