package wire

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
)

// Control message types.
const (
	// MsgHello is the agent's first message: its version and catalogue.
	MsgHello = "hello"
	// MsgCatalog replaces the agent's service catalogue.
	MsgCatalog = "catalog"
	// MsgPing and MsgPong are heartbeats; Seq pairs them.
	MsgPing = "ping"
	MsgPong = "pong"
	// MsgBeat is the agent's heartbeat on its control stream, written
	// while the gateway is silent (transport.Beat, transport.Silence; Seq
	// counts): it gets no answer and says nothing.
	// It exists for its size: a QUIC keepalive PING is too small for a
	// gateway that restarted to answer with a stateless reset (quic-go
	// answers packets of more than 42 bytes only), so without it an agent
	// of a killed and restarted gateway would wait for its idle timeout.
	MsgBeat = "beat"
	// MsgWelcome is the gateway's answer to hello.
	MsgWelcome = "welcome"
	// MsgEndSession tells a node to end a session's SSH connections now;
	// Message is the reason shown to the user.
	MsgEndSession = "end_session"

	// The direct path (agent to agent, off the gateway).
	//
	// MsgDirect follows a StatusDirect reply on a dial stream: Ticket, the
	// target Node and its candidate Addrs; the caller dials them and opens
	// a KindPeer stream with the ticket.
	MsgDirect = "direct"
	// MsgExpect tells the target agent, on its control stream, to accept
	// one KindPeer stream under Ticket, from Caller (identity URI, with the
	// certificate Serial the gateway verified) to Service; Addrs are the
	// caller's candidate addresses, to send a packet to first (so that a
	// stateful firewall or NAT in front of the target lets the caller in).
	MsgExpect = "expect"
	// MsgCut tells the target agent to reset the direct stream of Ticket
	// with Code (a stream error code: revoked, access changed); Message
	// is the reason.
	MsgCut = "cut"
	// MsgAdopt tells a gateway, from the target agent, that it serves the
	// direct stream of Ticket from Caller (with certificate Serial) to
	// Service: every gateway the target is connected to tracks it, so that
	// a revocation made on any of them cuts it even after the gateway that
	// decided it died (MsgCut). MsgEnded says the stream of Ticket ended.
	MsgAdopt = "adopt"
	MsgEnded = "ended"
	// MsgReport tells the target agent that the caller's lease of the
	// direct stream of Ticket ended without a word from the caller (its
	// connection to the gateway went silent or broke): the target answers
	// MsgAdopt if the stream still runs, so that the gateway goes on
	// tracking it; an announced stream not begun is void.
	MsgReport = "report"
	// MsgCommitted tells the target that the audit event of the direct
	// stream of Ticket is durable: only then does it pass bytes (the
	// grant and the caller's connection overlap the commit).
	MsgCommitted = "committed"
	// MsgTrust (trust.go) carries the cluster's trust bundle in Trust,
	// from a gateway to an agent, when the gateway's CA keys change.
)

// Control is one message on a control stream. Fields unknown to the reader
// are ignored, and so are messages of unknown types, so either side can add
// some without breaking the other.
type Control struct {
	Type     string    `json:"type"`
	Version  string    `json:"version,omitempty"`
	Services []Service `json:"services,omitempty"`
	Seq      uint64    `json:"seq,omitempty"`
	Message  string    `json:"message,omitempty"`
	// Session names the session of MsgEndSession.
	Session string `json:"session,omitempty"`
	// Direct: in a hello, the agent accepts and opens direct streams; in a
	// welcome, the gateway brokers them.
	Direct bool `json:"direct,omitempty"`
	// Ahead, in a welcome, says the gateway decides direct streams ahead
	// of their use (wire.DirectAhead).
	Ahead bool `json:"ahead,omitempty"`
	// Addrs are candidate UDP addresses (host:port) of an agent: its own
	// in a hello; the target's in MsgDirect; the caller's in MsgExpect.
	Addrs []string `json:"addrs,omitempty"`
	// Ticket, Node, Caller, Serial, Service and Code: see MsgDirect,
	// MsgExpect and MsgCut.
	Ticket  string `json:"ticket,omitempty"`
	Node    string `json:"node,omitempty"`
	Caller  string `json:"caller,omitempty"`
	Serial  string `json:"serial,omitempty"`
	Service string `json:"service,omitempty"`
	Code    uint64 `json:"code,omitempty"`
	// DBUser and DBPassword, in a MsgExpect for a service whose agent
	// logs in to its database for the caller, are the credential the
	// gateway leased for the stream (dbcreds.go).
	DBUser     string `json:"db_user,omitempty"`
	DBPassword Secret `json:"db_password,omitempty"`
	// Trust is the trust bundle of a MsgTrust (trust.go).
	Trust *Trust `json:"trust,omitempty"`
	// Epoch, in a hello or a MsgTrusted, is the epoch of the trust bundle
	// the agent holds (Trust.Epoch).
	Epoch uint64 `json:"epoch,omitempty"`
}

// MaxAddrs bounds the candidate addresses of one agent.
const MaxAddrs = 8

// Service is one service an agent exposes.
type Service struct {
	Name string `json:"name"`
	// Protocol is a hint for people ("postgres", "mysql", "tcp").
	Protocol string `json:"protocol,omitempty"`
	// Credentials, if set, names the Vault path the gateway leases a
	// database credential from for each stream to this service
	// ("database/creds/orders-app"): the agent logs in for the caller.
	Credentials string `json:"credentials,omitempty"`
}

// WriteControl writes one message: length u32 (big endian) | JSON.
func WriteControl(w io.Writer, m Control) error {
	body, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode control message: %w", err)
	}
	if len(body) > MaxControlSize {
		return fmt.Errorf("encode control message: %d bytes, more than %d", len(body), MaxControlSize)
	}
	b := make([]byte, 4, 4+len(body))
	binary.BigEndian.PutUint32(b, uint32(len(body)))
	_, err = w.Write(append(b, body...))
	return err
}

// ReadControl reads exactly one control message from r.
func ReadControl(r io.Reader) (Control, error) {
	var pre [4]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return Control{}, fmt.Errorf("read control message: %w", err)
	}
	n := binary.BigEndian.Uint32(pre[:])
	if n > MaxControlSize {
		return Control{}, malformed("control message of %d bytes, more than %d", n, MaxControlSize)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return Control{}, fmt.Errorf("read control message: %w", noEOF(err))
	}
	return ParseControl(body)
}

// ParseControl decodes a control message body.
func ParseControl(body []byte) (Control, error) {
	var m Control
	if err := json.Unmarshal(body, &m); err != nil {
		return Control{}, malformed("control message: %v", err)
	}
	if m.Type == "" {
		return Control{}, malformed("control message without a type")
	}
	return m, nil
}
