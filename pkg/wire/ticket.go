package wire

import (
	"crypto/rand"
	"encoding/hex"
)

// ticketBytes is the size of a direct stream's ticket before hex.
const ticketBytes = 16

// NewTicket returns a random ticket naming one direct stream (Header.Ticket,
// Control.Ticket).
//
// A calling agent proposes one in its KindDial header, so that it can send
// its KindPeer header to the target while the gateway decides: the
// gateway announces the stream to the target under the proposed ticket
// when it is well formed (ValidTicket), under one of its own otherwise.
// The target accepts a ticket once, and only for the caller, certificate
// and service the gateway named, so a proposed ticket grants nothing.
func NewTicket() string {
	var b [ticketBytes]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ValidTicket reports whether t has NewTicket's form: 32 lowercase hex
// digits.
func ValidTicket(t string) bool {
	if len(t) != 2*ticketBytes {
		return false
	}
	for _, c := range []byte(t) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
