package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// MaxBodySize bounds every request body.
const MaxBodySize = 64 << 10

// ErrBadBody is wrapped by every Decode error.
var ErrBadBody = errors.New("malformed request body")

// Decode reads one JSON object from r into v: at most MaxBodySize bytes,
// no unknown fields, nothing after the object. It is the only way the
// gateway reads a request body.
func Decode(r io.Reader, v any) error {
	data, err := io.ReadAll(io.LimitReader(r, MaxBodySize+1))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadBody, err)
	}
	return DecodeBytes(data, v)
}

// DecodeBytes is Decode on a byte slice.
func DecodeBytes(data []byte, v any) error {
	if len(data) > MaxBodySize {
		return fmt.Errorf("%w: larger than %d bytes", ErrBadBody, MaxBodySize)
	}
	// A JSON null would decode into v as "nothing", leaving it as it was:
	// refuse it, and anything else that is not an object, up front.
	if trimmed := bytes.TrimLeft(data, " \t\r\n"); len(trimmed) > 0 && trimmed[0] != '{' {
		return fmt.Errorf("%w: the body must be a JSON object", ErrBadBody)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrBadBody, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: unexpected data after the JSON object", ErrBadBody)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: unexpected data after the JSON object", ErrBadBody)
	}
	return nil
}

// Duration is a time.Duration that travels as a Go duration string ("1h30m").
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON implements json.Unmarshaler.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"1h\": %w", err)
	}
	s = strings.TrimSpace(s)
	if s == "" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", s)
	}
	*d = Duration(v)
	return nil
}
