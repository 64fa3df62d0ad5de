// Package wire is the protocol spoken on QUIC connections between agents,
// clients and gateways (ALPN "tunnel/1").
//
// Every bidirectional stream starts with a [Header] written by the opener,
// then a [Reply] written by the other end, then raw bytes in both
// directions until each side closes (FIN) or resets its half:
//
//	opener                         acceptor
//	Header{Kind, Target, ...} ──▶
//	                          ◀── Reply{Status, Message}
//	raw bytes  ◀──────────────────▶ raw bytes
//
// The control stream (KindControl) instead carries length-prefixed
// [Control] messages both ways for the life of the connection.
//
// Encodings are small, versioned and bounded: a header is at most
// MaxHeaderSize bytes, a reply MaxReplySize, a control message
// MaxControlSize. Readers never read past the frame they decode, so the raw
// bytes that follow reach the caller untouched. Golden files in testdata/
// pin every encoding; fuzz targets feed the decoders hostile bytes.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf8"
)

// ALPN is the TLS application protocol of tunnel QUIC connections. Its
// version changes when the wire format changes incompatibly.
const ALPN = "tunnel/1"

// ALPNTCP is the TLS application protocol, on the gateway's TCP API port,
// of QUIC carried over TCP where UDP is blocked (pkg/transport's
// StreamPackets); the QUIC connection inside still speaks ALPN.
const ALPNTCP = "tunnel-tcp/1"

// Version is the version byte that starts every header and reply.
const Version = 1

// Limits.
const (
	MaxHeaderSize  = 1024
	MaxReplySize   = 512
	MaxControlSize = 64 << 10
	maxFieldLen    = 255
)

// Kind says what a stream is for.
type Kind uint8

// Stream kinds.
const (
	// KindControl is the one control stream an agent opens after
	// connecting: catalogue, heartbeats, revocations.
	KindControl Kind = 1
	// KindDial asks the gateway to connect the stream to Target
	// ("node/service").
	KindDial Kind = 2
	// KindDeliver is opened by the gateway on a target agent's connection:
	// connect the stream to the local service Target. Caller says on whose
	// behalf.
	KindDeliver Kind = 3
	// KindPeer is opened by a calling agent on its direct connection to
	// the target agent (the direct path): connect the stream to the local
	// service Target, as the gateway authorised under Ticket.
	KindPeer Kind = 4
)

func (k Kind) String() string {
	switch k {
	case KindControl:
		return "control"
	case KindDial:
		return "dial"
	case KindDeliver:
		return "deliver"
	case KindPeer:
		return "peer"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Header opens a stream.
type Header struct {
	Kind Kind
	// Target is "node/service" for KindDial, "service" for KindDeliver.
	Target string
	// Caller identifies the original caller for KindDeliver (an identity
	// URI such as tunnel://prod/agent/app-1); set by the gateway only.
	Caller string
	// Session is an optional session id.
	Session string
	// Login and Deadline describe the session of a KindDeliver stream to a
	// node's SSH endpoint: the OS login granted and when the session ends
	// (unix seconds). Set by the gateway only.
	Login    string
	Deadline int64
	// Idle is the session's idle timeout in seconds (0: the node's default).
	Idle int64
	// Permit lists what the session may do beyond a shell, comma-separated:
	// "port-forwarding", "agent-forwarding".
	Permit string
	// Ticket names the gateway's authorisation of a KindPeer stream (see
	// Control.Ticket); on a KindDial stream offering the direct path, the
	// ticket the caller proposes for it (NewTicket).
	Ticket string
	// Direct, on a KindDial stream of an agent, offers the direct path:
	// the gateway may answer StatusDirect and a MsgDirect instead of
	// relaying (DirectOffer); or asks for a direct stream decided ahead
	// of its use, which the gateway never relays (DirectAhead).
	Direct string
	// DBUser and DBPassword, on a KindDeliver stream to a service whose
	// agent logs in to its database for the caller (dbcreds.go), are the
	// short-lived credential the gateway leased for the stream. Set by
	// the gateway only; never logged.
	DBUser     string
	DBPassword Secret
}

// Values of Header.Direct.
const (
	// DirectOffer offers the direct path for a stream the caller has now.
	DirectOffer = "1"
	// DirectAhead asks for a direct stream decided ahead: the gateway
	// decides, audits and announces it as for DirectOffer, or refuses it
	// (it never relays one). The caller holds the grant until a client
	// comes, then sends AheadUsed on the dial stream (its lease) and opens
	// the KindPeer stream at once; a grant it does not use, it ends by
	// closing the lease with nothing sent.
	DirectAhead = "ahead"
	// AheadUsed is the byte a caller sends on the lease of a stream
	// decided ahead when it starts the stream.
	AheadUsed = 'U'
)

// AheadHold is the longest a caller may hold a grant decided ahead
// unused: a gateway voids one held longer (the target then forgets its
// announcement). Callers give theirs up sooner.
const AheadHold = 25 * time.Second

// Field tags inside a header body.
const (
	tagTarget   = 1
	tagCaller   = 2
	tagSession  = 3
	tagLogin    = 4
	tagDeadline = 5
	tagIdle     = 6
	tagPermit   = 7
	tagTicket   = 8
	tagDirect   = 9
	tagDBUser   = 10
	tagDBPass   = 11
)

// ErrMalformed is wrapped by every decoding error.
var ErrMalformed = errors.New("malformed frame")

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
}

// AppendHeader appends the encoding of h:
//
//	version u8 | kind u8 | body length u16 (big endian) | body
//	body: fields, each tag u8 | length u8 (1 to 255) | UTF-8 bytes, tags ascending;
//	      an empty field is left out
func AppendHeader(b []byte, h Header) ([]byte, error) {
	if h.Kind < KindControl || h.Kind > KindPeer {
		return nil, fmt.Errorf("encode header: unknown kind %d", h.Kind)
	}
	start := len(b)
	b = append(b, Version, byte(h.Kind), 0, 0)
	var err error
	deadline, idle := "", ""
	if h.Deadline != 0 {
		deadline = strconv.FormatInt(h.Deadline, 10)
	}
	if h.Idle != 0 {
		idle = strconv.FormatInt(h.Idle, 10)
	}
	for _, f := range []struct {
		tag byte
		v   string
	}{{tagTarget, h.Target}, {tagCaller, h.Caller}, {tagSession, h.Session}, {tagLogin, h.Login}, {tagDeadline, deadline}, {tagIdle, idle}, {tagPermit, h.Permit}, {tagTicket, h.Ticket}, {tagDirect, h.Direct}, {tagDBUser, h.DBUser}, {tagDBPass, string(h.DBPassword)}} {
		if f.v == "" {
			continue
		}
		if b, err = appendField(b, f.tag, f.v); err != nil {
			return nil, err
		}
	}
	body := len(b) - start - 4
	if len(b)-start > MaxHeaderSize {
		return nil, fmt.Errorf("encode header: %d bytes, more than %d", len(b)-start, MaxHeaderSize)
	}
	binary.BigEndian.PutUint16(b[start+2:], uint16(body))
	return b, nil
}

func appendField(b []byte, tag byte, v string) ([]byte, error) {
	if len(v) > maxFieldLen || !utf8.ValidString(v) {
		return nil, fmt.Errorf("encode header: field %d is not valid UTF-8 of at most %d bytes", tag, maxFieldLen)
	}
	b = append(b, tag, byte(len(v)))
	return append(b, v...), nil
}

// WriteHeader writes h to w in one Write.
func WriteHeader(w io.Writer, h Header) error {
	b, err := AppendHeader(nil, h)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// ReadHeader reads exactly one header from r, and no byte more.
func ReadHeader(r io.Reader) (Header, error) {
	var pre [4]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return Header{}, fmt.Errorf("read header: %w", err)
	}
	n := int(binary.BigEndian.Uint16(pre[2:]))
	if 4+n > MaxHeaderSize {
		return Header{}, malformed("header of %d bytes, more than %d", 4+n, MaxHeaderSize)
	}
	buf := make([]byte, 4+n)
	copy(buf, pre[:])
	if _, err := io.ReadFull(r, buf[4:]); err != nil {
		return Header{}, fmt.Errorf("read header: %w", noEOF(err))
	}
	return ParseHeader(buf)
}

// ParseHeader decodes a complete header.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < 4 {
		return Header{}, malformed("header shorter than 4 bytes")
	}
	if len(b) > MaxHeaderSize {
		// As ReadHeader: five full fields could otherwise pass here.
		return Header{}, malformed("header of %d bytes, more than %d", len(b), MaxHeaderSize)
	}
	if b[0] != Version {
		return Header{}, malformed("header version %d, this side speaks %d (upgrade the older side)", b[0], Version)
	}
	h := Header{Kind: Kind(b[1])}
	if h.Kind < KindControl || h.Kind > KindPeer {
		return Header{}, malformed("unknown stream kind %d", b[1])
	}
	n := int(binary.BigEndian.Uint16(b[2:]))
	if len(b) != 4+n {
		return Header{}, malformed("header body is %d bytes, length says %d", len(b)-4, n)
	}
	body := b[4:]
	last := byte(0)
	for len(body) > 0 {
		if len(body) < 2 {
			return Header{}, malformed("truncated field")
		}
		tag, l := body[0], int(body[1])
		if tag <= last {
			return Header{}, malformed("field %d out of order or repeated", tag)
		}
		last = tag
		if len(body) < 2+l {
			return Header{}, malformed("field %d truncated", tag)
		}
		if l == 0 {
			// The encoder omits empty fields: one header, one encoding.
			return Header{}, malformed("field %d is empty", tag)
		}
		v := body[2 : 2+l]
		body = body[2+l:]
		if !utf8.Valid(v) {
			return Header{}, malformed("field %d is not UTF-8", tag)
		}
		switch tag {
		case tagTarget:
			h.Target = string(v)
		case tagCaller:
			h.Caller = string(v)
		case tagSession:
			h.Session = string(v)
		case tagLogin:
			h.Login = string(v)
		case tagDeadline:
			d, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil || d <= 0 || strconv.FormatInt(d, 10) != string(v) {
				return Header{}, malformed("deadline %q is not a positive unix time", v)
			}
			h.Deadline = d
		case tagIdle:
			d, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil || d <= 0 || strconv.FormatInt(d, 10) != string(v) {
				return Header{}, malformed("idle timeout %q is not a positive number of seconds", v)
			}
			h.Idle = d
		case tagPermit:
			h.Permit = string(v)
		case tagTicket:
			h.Ticket = string(v)
		case tagDirect:
			h.Direct = string(v)
		case tagDBUser:
			h.DBUser = string(v)
		case tagDBPass:
			h.DBPassword = Secret(v)
		default:
			return Header{}, malformed("unknown field %d", tag)
		}
	}
	return h, nil
}

// Status is the outcome of opening a stream.
type Status uint8

// Statuses.
const (
	StatusOK          Status = 0
	StatusDenied      Status = 1 // policy refused it
	StatusUnavailable Status = 2 // the target node is offline or unknown
	StatusDialFailed  Status = 3 // the target service refused the connection
	StatusBadRequest  Status = 4 // the header made no sense
	StatusInternal    Status = 5
	// StatusDirect answers a dial that offered the direct path: the
	// gateway authorised the stream, and a MsgDirect follows with the
	// ticket and the target agent's addresses; the caller connects to the
	// target itself, and keeps this stream open while its direct stream
	// lives (the gateway resets it to cut the stream).
	StatusDirect Status = 6
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusDenied:
		return "denied"
	case StatusUnavailable:
		return "unavailable"
	case StatusDialFailed:
		return "dial failed"
	case StatusBadRequest:
		return "bad request"
	case StatusInternal:
		return "internal error"
	case StatusDirect:
		return "direct"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Reply answers a header. Message explains a refusal in words for a person.
type Reply struct {
	Status  Status
	Message string
}

// Error turns a refusal into an error (nil for StatusOK).
func (r Reply) Err() error {
	if r.Status == StatusOK {
		return nil
	}
	return &RefusedError{Status: r.Status, Message: r.Message}
}

// RefusedError is a stream the other end refused.
type RefusedError struct {
	Status  Status
	Message string
}

func (e *RefusedError) Error() string {
	if e.Message == "" {
		return e.Status.String()
	}
	return e.Message
}

// AppendReply appends: version u8 | status u8 | length u16 | UTF-8 message.
func AppendReply(b []byte, r Reply) ([]byte, error) {
	if len(r.Message)+4 > MaxReplySize || !utf8.ValidString(r.Message) {
		return nil, fmt.Errorf("encode reply: message must be UTF-8 of at most %d bytes", MaxReplySize-4)
	}
	b = append(b, Version, byte(r.Status), 0, 0)
	binary.BigEndian.PutUint16(b[len(b)-2:], uint16(len(r.Message)))
	return append(b, r.Message...), nil
}

// WriteReply writes r to w in one Write. A message too long is cut.
func WriteReply(w io.Writer, r Reply) error {
	if len(r.Message) > MaxReplySize-4 {
		r.Message = r.Message[:MaxReplySize-4]
		for !utf8.ValidString(r.Message) {
			r.Message = r.Message[:len(r.Message)-1]
		}
	}
	b, err := AppendReply(nil, r)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// ReadReply reads exactly one reply from r.
func ReadReply(r io.Reader) (Reply, error) {
	var pre [4]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return Reply{}, fmt.Errorf("read reply: %w", err)
	}
	if pre[0] != Version {
		return Reply{}, malformed("reply version %d, this side speaks %d", pre[0], Version)
	}
	n := int(binary.BigEndian.Uint16(pre[2:]))
	if 4+n > MaxReplySize {
		return Reply{}, malformed("reply of %d bytes, more than %d", 4+n, MaxReplySize)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return Reply{}, fmt.Errorf("read reply: %w", noEOF(err))
	}
	if !utf8.Valid(msg) {
		return Reply{}, malformed("reply message is not UTF-8")
	}
	st := Status(pre[1])
	if st > StatusDirect {
		return Reply{}, malformed("unknown status %d", pre[1])
	}
	return Reply{Status: st, Message: string(msg)}, nil
}

// noEOF reports a frame cut after its first bytes as io.ErrUnexpectedEOF:
// only a stream that ends before a frame starts ends cleanly (io.EOF).
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
