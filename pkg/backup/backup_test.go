package backup

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
)

func newKey(t *testing.T) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func write(t *testing.T, payload []byte, to ...*age.X25519Identity) []byte {
	t.Helper()
	var rs []age.Recipient
	for _, id := range to {
		rs = append(rs, id.Recipient())
	}
	var buf bytes.Buffer
	h := Header{StoreKind: "sqlite", SchemaVersion: 8, Cluster: "prod", CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		KEK: KEKInfo{Backend: "file", KeyIDs: []string{"0011223344556677"}}}
	got, err := Write(&buf, rs, h, bytes.NewReader(payload))
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if got.PayloadSize != int64(len(payload)) || got.Format != Format || len(got.PayloadSHA256) != 64 {
		t.Errorf("Write's header = %+v", got)
	}
	return buf.Bytes()
}

func read(file []byte, ids ...*age.X25519Identity) (Header, []byte, error) {
	var is []age.Identity
	for _, id := range ids {
		is = append(is, id)
	}
	rd, err := Open(bytes.NewReader(file), is)
	if err != nil {
		return Header{}, nil, err
	}
	var out bytes.Buffer
	err = rd.Payload(&out)
	return rd.Header, out.Bytes(), err
}

func TestRoundTrip(t *testing.T) {
	a, b := newKey(t), newKey(t)
	payload := bytes.Repeat([]byte("snapshot\x00"), 50000) // several age chunks
	file := write(t, payload, a, b)
	if bytes.Contains(file, []byte("snapshot")) || bytes.Contains(file, []byte("prod")) {
		t.Errorf("the backup shows its contents in the clear")
	}
	for _, id := range []*age.X25519Identity{a, b} {
		h, got, err := read(file, id)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if !bytes.Equal(got, payload) {
			t.Errorf("payload differs")
		}
		if h.Cluster != "prod" || h.StoreKind != "sqlite" || h.SchemaVersion != 8 || h.KEK.KeyIDs[0] != "0011223344556677" {
			t.Errorf("header = %+v", h)
		}
	}
}

func TestWrongIdentity(t *testing.T) {
	file := write(t, []byte("x"), newKey(t))
	if _, _, err := read(file, newKey(t)); !errors.Is(err, ErrWrongIdentity) {
		t.Errorf("read with another identity: %v; want ErrWrongIdentity", err)
	}
}

func TestTamperedOrTruncated(t *testing.T) {
	id := newKey(t)
	payload := bytes.Repeat([]byte{1, 2, 3}, 70000)
	file := write(t, payload, id)
	// Every byte after age's header, flipped, is refused as damaged.
	hdrEnd := bytes.Index(file, []byte("\n---")) + 48
	for _, i := range []int{hdrEnd, hdrEnd + 20, len(file) / 2, len(file) - 17, len(file) - 1} {
		b := bytes.Clone(file)
		b[i] ^= 0x40
		if _, _, err := read(b, id); !errors.Is(err, ErrDamaged) {
			t.Errorf("byte %d of %d flipped: %v; want ErrDamaged", i, len(file), err)
		}
	}
	for _, n := range []int{len(file) - 1, len(file) - 100, len(file) / 2, hdrEnd + 10} {
		if _, _, err := read(file[:n], id); !errors.Is(err, ErrDamaged) {
			t.Errorf("truncated to %d of %d bytes: %v; want ErrDamaged", n, len(file), err)
		}
	}
	if _, _, err := read(append(bytes.Clone(file), 0), id); !errors.Is(err, ErrDamaged) {
		t.Errorf("a byte appended: %v; want ErrDamaged", err)
	}
	// Any flip at all is refused one way or another.
	for i := 0; i < len(file); i += 997 {
		b := bytes.Clone(file)
		b[i] ^= 0x01
		if _, _, err := read(b, id); err == nil {
			t.Fatalf("byte %d flipped: read succeeded", i)
		}
	}
}

// TestPayloadHashChecked: a file made by someone holding a recipient key,
// whose payload does not match its header, is refused.
func TestPayloadHashChecked(t *testing.T) {
	id := newKey(t)
	h := Header{Format: Format, StoreKind: "sqlite", PayloadSize: 3,
		PayloadSHA256: "0000000000000000000000000000000000000000000000000000000000000000"}
	hb, _ := json.Marshal(h)
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, id.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(hb)))
	w.Write([]byte(magic))
	w.Write(n[:])
	w.Write(hb)
	w.Write([]byte("abc"))
	w.Close()
	_, _, err = read(buf.Bytes(), id)
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "SHA-256") {
		t.Errorf("a payload that does not match its hash: %v; want ErrDamaged naming the SHA-256", err)
	}
}
