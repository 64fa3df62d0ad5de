package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tunnelhq/tunnel/pkg/wire"
)

// hdr builds a header frame by hand: version, kind, then body with its
// length computed.
func hdr(version, kind byte, body ...byte) []byte {
	b := []byte{version, kind, 0, 0}
	binary.BigEndian.PutUint16(b[2:], uint16(len(body)))
	return append(b, body...)
}

// field builds one header field.
func field(tag byte, v string) []byte {
	return append([]byte{tag, byte(len(v))}, v...)
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func rep(version, status byte, msg string) []byte {
	b := []byte{version, status, 0, 0}
	binary.BigEndian.PutUint16(b[2:], uint16(len(msg)))
	return append(b, msg...)
}

func ctl(body string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
	return append(b, body...)
}

func TestParseHeaderStrict(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"short prefix", []byte{1, 2, 0}},
		{"version 0", hdr(0, 2, field(1, "a/b")...)},
		{"version 2", hdr(2, 2, field(1, "a/b")...)},
		{"kind 0", hdr(1, 0)},
		{"kind 5", hdr(1, 5)},
		{"kind 255", hdr(1, 255)},
		{"unknown field tag 12", hdr(1, 2, field(12, "x")...)},
		{"idle not a number", hdr(1, 3, field(6, "soon")...)},
		{"deadline not a number", hdr(1, 3, field(5, "soon")...)},
		{"deadline with a leading zero", hdr(1, 3, field(5, "0123")...)},
		{"deadline zero", hdr(1, 3, field(5, "0")...)},
		{"deadline negative", hdr(1, 3, field(5, "-1")...)},
		{"deadline with a plus", hdr(1, 3, field(5, "+1")...)},
		{"deadline overflows", hdr(1, 3, field(5, "9223372036854775808")...)},
		{"login before session", hdr(1, 3, cat(field(4, "root"), field(3, "s"))...)},
		{"over MaxHeaderSize by fields", hdr(1, 3, cat(field(1, strings.Repeat("t", 255)), field(2, strings.Repeat("c", 255)),
			field(3, strings.Repeat("s", 255)), field(4, strings.Repeat("l", 255)), field(5, "1795500000"))...)},
		{"unknown field tag 255", hdr(1, 2, field(255, "x")...)},
		{"field tag 0", hdr(1, 2, field(0, "x")...)},
		{"unknown tag after known", hdr(1, 2, cat(field(1, "a/b"), field(12, "x"))...)},
		{"fields out of order", hdr(1, 3, cat(field(2, "c"), field(1, "t"))...)},
		{"session before target", hdr(1, 3, cat(field(3, "s"), field(1, "t"))...)},
		{"field repeated", hdr(1, 2, cat(field(1, "a/b"), field(1, "c/d"))...)},
		{"field repeated empty", hdr(1, 2, cat(field(1, "a/b"), field(1, ""))...)},
		{"empty field", hdr(1, 2, field(1, "")...)}, // the encoder omits empty fields
		{"empty caller", hdr(1, 3, cat(field(1, "svc"), field(2, ""))...)},
		{"lone tag byte", hdr(1, 2, 1)},
		{"field longer than body", hdr(1, 2, 1, 5, 'a', 'b')},
		{"non-UTF-8 target", hdr(1, 2, field(1, "a\xffb")...)},
		{"non-UTF-8 caller", hdr(1, 3, field(2, "\xc3")...)},
		{"non-UTF-8 session", hdr(1, 3, field(3, "\xed\xa0\x80")...)}, // surrogate half
		{"length says more", append(hdr(1, 2, field(1, "a/b")...)[:4:4], field(1, "a")...)},
		{"trailing byte", append(hdr(1, 2, field(1, "a/b")...), 0)},
		{"trailing frame", append(hdr(1, 2), hdr(1, 2)...)},
		{"oversize length", append([]byte{1, 2, 0xff, 0xff}, make([]byte, 0xffff)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := wire.ParseHeader(tt.in)
			if err == nil {
				t.Fatalf("ParseHeader(%x) = %+v, nil; want an error", tt.in, h)
			}
			if !errors.Is(err, wire.ErrMalformed) {
				t.Errorf("ParseHeader(%x) = %v; want an error wrapping ErrMalformed", tt.in, err)
			}
			// ReadHeader rejects it too (or runs out of bytes).
			if h, err := wire.ReadHeader(bytes.NewReader(tt.in)); err == nil && !strings.HasPrefix(tt.name, "trailing") {
				t.Errorf("ReadHeader(%x) = %+v, nil; want an error", tt.in, h)
			}
		})
	}
}

func TestReadHeaderOversize(t *testing.T) {
	// The length alone condemns the frame: ReadHeader must not wait for,
	// or allocate, 64 KiB.
	for _, n := range []int{wire.MaxHeaderSize - 3, 0xffff} {
		pre := []byte{1, 2, 0, 0}
		binary.BigEndian.PutUint16(pre[2:], uint16(n))
		r := &strictReader{data: pre}
		_, err := wire.ReadHeader(r)
		if !errors.Is(err, wire.ErrMalformed) {
			t.Errorf("ReadHeader(length %d) = %v; want ErrMalformed", n, err)
		}
		if r.overread {
			t.Errorf("ReadHeader(length %d) read past the 4-byte prefix", n)
		}
	}
}

func TestReadReplyStrict(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"version 0", rep(0, 0, "")},
		{"version 2", rep(2, 1, "no")},
		{"status 7", rep(1, 7, "")},
		{"status 255", rep(1, 255, "why")},
		{"non-UTF-8 message", rep(1, 1, "denied \xff")},
		{"truncated UTF-8 message", rep(1, 1, "\xe2\x9c")},
		{"oversize length", append([]byte{1, 1, 0xff, 0xff}, make([]byte, 0xffff)...)},
		{"just over the limit", rep(1, 1, strings.Repeat("m", wire.MaxReplySize-3))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := wire.ReadReply(bytes.NewReader(tt.in))
			if err == nil {
				t.Fatalf("ReadReply(%x) = %+v, nil; want an error", tt.in, r)
			}
			if !errors.Is(err, wire.ErrMalformed) {
				t.Errorf("ReadReply(%x) = %v; want an error wrapping ErrMalformed", tt.in, err)
			}
		})
	}
}

func TestReadControlStrict(t *testing.T) {
	over := make([]byte, 4)
	binary.BigEndian.PutUint32(over, wire.MaxControlSize+1)
	huge := []byte{0xff, 0xff, 0xff, 0xff}
	tests := []struct {
		name string
		in   []byte
	}{
		{"no type", ctl(`{"seq":1}`)},
		{"empty type", ctl(`{"type":""}`)},
		{"empty object", ctl(`{}`)},
		{"null", ctl(`null`)},
		{"empty body", ctl(``)},
		{"not JSON", ctl(`hello`)},
		{"array", ctl(`[{"type":"ping"}]`)},
		{"type not a string", ctl(`{"type":1}`)},
		{"seq negative", ctl(`{"type":"ping","seq":-1}`)},
		{"seq not an integer", ctl(`{"type":"ping","seq":1.5}`)},
		{"trailing garbage", ctl(`{"type":"ping"}x`)},
		{"two objects", ctl(`{"type":"ping"}{"type":"pong"}`)},
		{"over MaxControlSize", over},
		{"length 4 GiB", huge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &strictReader{data: tt.in}
			m, err := wire.ReadControl(r)
			if err == nil {
				t.Fatalf("ReadControl(%q) = %+v, nil; want an error", tt.in, m)
			}
			if !errors.Is(err, wire.ErrMalformed) {
				t.Errorf("ReadControl(%q) = %v; want an error wrapping ErrMalformed", tt.in, err)
			}
			if r.overread {
				t.Errorf("ReadControl(%q) read past its input", tt.in)
			}
		})
	}
}

func TestReadControlLimit(t *testing.T) {
	// A body of exactly MaxControlSize bytes is accepted.
	pad := wire.MaxControlSize - len(`{"type":"welcome","message":""}`)
	body := `{"type":"welcome","message":"` + strings.Repeat("x", pad) + `"}`
	if len(body) != wire.MaxControlSize {
		t.Fatalf("test body is %d bytes", len(body))
	}
	m, err := wire.ReadControl(bytes.NewReader(ctl(body)))
	if err != nil {
		t.Fatalf("ReadControl(%d bytes) = %v", len(body), err)
	}
	if len(m.Message) != pad {
		t.Errorf("message = %d bytes; want %d", len(m.Message), pad)
	}
}

// Readers are lenient where the format says so: unknown fields and unknown
// types pass, so that either side can grow.
func TestParseControlLenient(t *testing.T) {
	tests := []struct {
		in   string
		want wire.Control
	}{
		{`{"type":"ping","seq":7,"future":{"a":[1,2]}}`, wire.Control{Type: wire.MsgPing, Seq: 7}},
		{`{"type":"revoke","message":"bye"}`, wire.Control{Type: "revoke", Message: "bye"}},
		{` {"type":"pong"} `, wire.Control{Type: wire.MsgPong}},
	}
	for _, tt := range tests {
		got, err := wire.ParseControl([]byte(tt.in))
		if err != nil {
			t.Errorf("ParseControl(%s) = %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseControl(%s) mismatch (-want +got):\n%s", tt.in, diff)
		}
	}
}

// Every proper prefix of a valid frame is an error, never a hang, a panic
// or a success.
func TestTruncated(t *testing.T) {
	type frame struct {
		name string
		b    []byte
		read func(io.Reader) error
	}
	var frames []frame
	readHeader := func(r io.Reader) error { _, err := wire.ReadHeader(r); return err }
	readReply := func(r io.Reader) error { _, err := wire.ReadReply(r); return err }
	readControl := func(r io.Reader) error { _, err := wire.ReadControl(r); return err }
	for name, h := range goldenHeaders() {
		b, err := wire.AppendHeader(nil, h)
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, frame{name, b, readHeader})
	}
	for name, r := range goldenReplies() {
		b, err := wire.AppendReply(nil, r)
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, frame{name, b, readReply})
	}
	for name, m := range goldenControls() {
		frames = append(frames, frame{name, encodeControl(t, m), readControl})
	}
	for _, f := range frames {
		for i := range len(f.b) {
			prefix := f.b[:i]
			err := f.read(bytes.NewReader(prefix))
			if err == nil {
				t.Errorf("%s: reading the first %d of %d bytes succeeded; want an error", f.name, i, len(f.b))
				continue
			}
			// Nothing at all is a clean end (io.EOF); part of a frame is
			// not, wherever the cut falls.
			if i == 0 && !errors.Is(err, io.EOF) {
				t.Errorf("%s: reading nothing = %v; want io.EOF", f.name, err)
			}
			if i > 0 && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("%s: reading the first %d of %d bytes = %v; want io.ErrUnexpectedEOF", f.name, i, len(f.b), err)
			}
			if strings.HasPrefix(f.name, "header") {
				if h, err := wire.ParseHeader(prefix); err == nil {
					t.Errorf("%s: ParseHeader(first %d bytes) = %+v, nil; want an error", f.name, i, h)
				}
			}
		}
	}
}

// Each reader consumes exactly its frame: the raw bytes behind it are left
// for the caller.
func TestReadersLeaveFollowingBytes(t *testing.T) {
	const rest = "\x00raw bytes\xff that follow"
	type frame struct {
		name string
		b    []byte
		read func(io.Reader) (any, error)
		want any
	}
	var frames []frame
	for name, h := range goldenHeaders() {
		b, err := wire.AppendHeader(nil, h)
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, frame{name, b, func(r io.Reader) (any, error) { return wire.ReadHeader(r) }, h})
	}
	for name, rp := range goldenReplies() {
		b, err := wire.AppendReply(nil, rp)
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, frame{name, b, func(r io.Reader) (any, error) { return wire.ReadReply(r) }, rp})
	}
	for name, m := range goldenControls() {
		frames = append(frames, frame{name, encodeControl(t, m), func(r io.Reader) (any, error) { return wire.ReadControl(r) }, m})
	}
	for _, f := range frames {
		for _, name := range []string{"bytes.Reader", "one byte at a time"} {
			var r io.Reader = bytes.NewReader(append(f.b, rest...))
			if name == "one byte at a time" {
				r = &oneByteReader{r}
			}
			got, err := f.read(r)
			if err != nil {
				t.Errorf("%s (%s): %v", f.name, name, err)
				continue
			}
			if diff := cmp.Diff(f.want, got); diff != "" {
				t.Errorf("%s (%s) mismatch (-want +got):\n%s", f.name, name, diff)
			}
			left, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if string(left) != rest {
				t.Errorf("%s (%s): left %q unread; want %q", f.name, name, left, rest)
			}
		}
	}
	// Two frames back to back are read one at a time.
	var buf bytes.Buffer
	wire.WriteHeader(&buf, wire.Header{Kind: wire.KindDial, Target: "a/b"})
	wire.WriteHeader(&buf, wire.Header{Kind: wire.KindDeliver, Target: "b", Caller: "c"})
	for _, want := range []wire.Header{{Kind: wire.KindDial, Target: "a/b"}, {Kind: wire.KindDeliver, Target: "b", Caller: "c"}} {
		got, err := wire.ReadHeader(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("back-to-back header mismatch (-want +got):\n%s", diff)
		}
	}
}

// strictReader serves data and records an attempt to read beyond it; it
// never blocks, so a reader that wants more than the frame gets io.EOF.
type strictReader struct {
	data     []byte
	overread bool
}

func (r *strictReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(r.data) == 0 {
		r.overread = true
		return 0, io.EOF
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

type oneByteReader struct{ r io.Reader }

func (o *oneByteReader) Read(p []byte) (int, error) {
	if len(p) > 1 {
		p = p[:1]
	}
	return o.r.Read(p)
}
