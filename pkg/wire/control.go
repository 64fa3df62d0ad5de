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
	// MsgWelcome is the gateway's answer to hello.
	MsgWelcome = "welcome"
	// MsgEndSession tells a node to end a session's SSH connections now;
	// Message is the reason shown to the user.
	MsgEndSession = "end_session"
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
}

// Service is one service an agent exposes.
type Service struct {
	Name string `json:"name"`
	// Protocol is a hint for people ("postgres", "mysql", "tcp").
	Protocol string `json:"protocol,omitempty"`
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
