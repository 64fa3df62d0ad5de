package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tunnelhq/tunnel/pkg/wire"
)

func FuzzParseHeader(f *testing.F) {
	for _, h := range goldenHeaders() {
		b, err := wire.AppendHeader(nil, h)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(hdr(1, 2, field(1, "")...))
	f.Add(hdr(1, 2, cat(field(2, "c"), field(1, "t"))...))
	f.Add([]byte{1, 2, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := wire.ParseHeader(b)
		// ReadHeader agrees with ParseHeader on a complete frame.
		rh, rerr := wire.ReadHeader(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, wire.ErrMalformed) {
				t.Fatalf("ParseHeader(%x) = %v; want ErrMalformed", b, err)
			}
			if rerr == nil && len(b) >= 4 && 4+int(binary.BigEndian.Uint16(b[2:])) == len(b) {
				t.Fatalf("ReadHeader(%x) = %+v; ParseHeader refused it: %v", b, rh, err)
			}
			return
		}
		if rerr != nil {
			t.Fatalf("ParseHeader(%x) accepted it; ReadHeader = %v", b, rerr)
		}
		if diff := cmp.Diff(h, rh); diff != "" {
			t.Fatalf("ParseHeader and ReadHeader differ (-parse +read):\n%s", diff)
		}
		// One header, one encoding.
		enc, err := wire.AppendHeader(nil, h)
		if err != nil {
			t.Fatalf("ParseHeader(%x) = %+v, which AppendHeader refuses: %v", b, h, err)
		}
		if !bytes.Equal(enc, b) {
			t.Fatalf("ParseHeader(%x) = %+v, which encodes as %x", b, h, enc)
		}
	})
}

func FuzzReadReply(f *testing.F) {
	for _, r := range goldenReplies() {
		b, err := wire.AppendReply(nil, r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(append(b, "more"...))
	}
	f.Add(rep(1, 6, ""))
	f.Add(rep(1, 1, "\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rd := bytes.NewReader(b)
		r, err := wire.ReadReply(rd)
		if err != nil {
			if !errors.Is(err, wire.ErrMalformed) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("ReadReply(%x) = %v; want ErrMalformed or a short read", b, err)
			}
			return
		}
		frame := b[:len(b)-rd.Len()]
		enc, err := wire.AppendReply(nil, r)
		if err != nil {
			t.Fatalf("ReadReply(%x) = %+v, which AppendReply refuses: %v", frame, r, err)
		}
		if !bytes.Equal(enc, frame) {
			t.Fatalf("ReadReply(%x) = %+v, which encodes as %x", frame, r, enc)
		}
		if (r.Err() == nil) != (r.Status == wire.StatusOK) {
			t.Fatalf("Reply%+v.Err() = %v", r, r.Err())
		}
	})
}

func FuzzParseControl(f *testing.F) {
	for _, m := range goldenControls() {
		b := encodeControl(f, m)
		f.Add(b[4:])
	}
	f.Add([]byte(`{"type":"ping","seq":18446744073709551615}`))
	f.Add([]byte(`{"type":"x","services":[{"name":"\ud800"}],"extra":null}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := wire.ParseControl(b)
		if err != nil {
			if !errors.Is(err, wire.ErrMalformed) {
				t.Fatalf("ParseControl(%q) = %v; want ErrMalformed", b, err)
			}
			return
		}
		if m.Type == "" {
			t.Fatalf("ParseControl(%q) accepted a message without a type", b)
		}
		// JSON has many spellings of one message, so compare messages,
		// not bytes: what is accepted survives a trip through the encoder.
		var buf bytes.Buffer
		if err := wire.WriteControl(&buf, m); err != nil {
			if len(b) <= wire.MaxControlSize/6 {
				t.Fatalf("WriteControl(ParseControl(%q)) = %v", b, err)
			}
			return // escaping can grow a large message past the limit
		}
		again, err := wire.ReadControl(&buf)
		if err != nil {
			t.Fatalf("ReadControl(WriteControl(ParseControl(%q))) = %v", b, err)
		}
		if diff := cmp.Diff(m, again, cmpopts.EquateEmpty()); diff != "" {
			t.Fatalf("control message changed through the encoder (-first +again):\n%s", diff)
		}
	})
}
