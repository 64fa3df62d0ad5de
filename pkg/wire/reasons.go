package wire

// Why a stream was cut. When the gateway (or an agent) ends a relayed
// stream abruptly it resets it (QUIC RESET_STREAM and STOP_SENDING) with
// one of these codes, so the far end can tell the person whose connection
// was cut why, in one sentence ([CutReason]):
//
//	connection to db-1/postgres closed by the gateway: access revoked by an administrator
//
// The first three values are pkg/transport's StreamReset, StreamCanceled
// and StreamRevoked (quic.StreamErrorCode); a new code is added here, with
// its sentence, before anyone sends it. Unknown codes are cuts without a
// reason, as a reset is.
const (
	// CutReset: the TCP connection behind the stream was reset, or the
	// stream failed; the application sees the reset and needs no sentence.
	CutReset uint64 = 0x1
	// CutCanceled: the stream was abandoned (shutdown, error).
	CutCanceled uint64 = 0x2
	// CutRevoked: an administrator revoked the caller's access (users
	// lock, users rm, agents lock, sessions revoke).
	CutRevoked uint64 = 0x3
	// CutExpired: the caller's certificate expired while the stream was
	// open.
	CutExpired uint64 = 0x4
	// CutAccessChanged: an administrator changed a role, a user's roles or
	// the policy, and the new rules no longer allow the stream.
	CutAccessChanged uint64 = 0x5
)

// CutReason returns the sentence for a stream cut with code, and false
// when the code carries none (a plain reset, or a code this side does not
// know).
func CutReason(code uint64) (string, bool) {
	switch code {
	case CutRevoked:
		return "access revoked by an administrator", true
	case CutExpired:
		return "your login certificate expired", true
	case CutAccessChanged:
		return "access changed by an administrator: the new rules no longer allow this connection", true
	}
	return "", false
}
