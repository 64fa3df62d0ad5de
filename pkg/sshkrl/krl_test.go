package sshkrl

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

// testCA returns a fixed Ed25519 CA key (seeded by b).
func testCA(t testing.TB, b byte) (ssh.Signer, ssh.PublicKey) {
	t.Helper()
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize))
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, s.PublicKey()
}

func u32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
func str(b []byte) []byte { return append(u32(uint32(len(b))), b...) }
func cat(parts ...[]byte) []byte {
	return bytes.Join(parts, nil)
}

// TestMarshalLayout: the bytes of PROTOCOL.krl, field by field: header,
// one certificate section with the CA's wire key, a range, a list and a
// key id subsection.
func TestMarshalLayout(t *testing.T) {
	_, ca := testCA(t, 1)
	k := &KRL{Version: 7, GeneratedDate: 1700000000, Comment: "hi",
		Sections: []CertSection{{CA: ca, Serials: append(Serials(99, 5), Range{10, 12}), KeyIDs: []string{"bob"}}}}
	got, err := k.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	section := cat(str(ca.Marshal()), str(nil),
		[]byte{0x21}, str(cat(u64(10), u64(12))),
		[]byte{0x20}, str(cat(u64(5), u64(99))),
		[]byte{0x23}, str(str([]byte("bob"))))
	want := cat([]byte("SSHKRL\n\x00"), u32(1), u64(7), u64(1700000000), u64(0), str(nil), str([]byte("hi")),
		[]byte{1}, str(section))
	if !bytes.Equal(got, want) {
		t.Errorf("Marshal:\n got %x\nwant %x", got, want)
	}
	back, err := Parse(got)
	if err != nil {
		t.Fatal(err)
	}
	if want := []Range{{5, 5}, {10, 12}, {99, 99}}; !reflect.DeepEqual(back.Sections[0].Serials, want) {
		t.Errorf("Parse serials = %v; want %v", back.Sections[0].Serials, want)
	}
}

// TestPlan: each serial encoding is chosen where it is the smallest.
func TestPlan(t *testing.T) {
	dense := []Range{}
	for v := uint64(1000); v < 1200; v += 3 {
		dense = append(dense, Range{v, v})
	}
	tests := []struct {
		name string
		in   []Range
		want []byte // kinds, in order
	}{
		{"scattered serials are listed", Serials(1<<40, 1<<50, 1<<60), []byte{certSerialList, certSerialList, certSerialList}},
		{"a run of three is a range", []Range{{10, 12}}, []byte{certSerialRange}},
		{"a pair is listed", []Range{{10, 11}}, []byte{certSerialList}},
		{"dense serials are a bitmap", dense, []byte{certSerialBitmap}},
		{"two nearby serials are listed", Serials(100, 150), []byte{certSerialList, certSerialList}},
		{"the full range", []Range{{1, math.MaxUint64}}, []byte{certSerialRange}},
	}
	for _, tt := range tests {
		var kinds []byte
		for _, r := range plan(normalize(tt.in)) {
			kinds = append(kinds, r.kind)
		}
		if !bytes.Equal(kinds, tt.want) {
			t.Errorf("%s: plan gives %x; want %x", tt.name, kinds, tt.want)
		}
	}
}

// TestRoundTrip: Parse gives back what Marshal was given, normalized,
// whatever encoding each serial took.
func TestRoundTrip(t *testing.T) {
	_, ca1 := testCA(t, 1)
	_, ca2 := testCA(t, 2)
	var dense []uint64
	for v := uint64(5000); v < 9000; v += 2 {
		dense = append(dense, v)
	}
	k := &KRL{Version: 1, GeneratedDate: 2, Comment: "c", Sections: []CertSection{
		{CA: ca1, Serials: append(Serials(dense...), Range{math.MaxUint64 - 3, math.MaxUint64}, Range{1, 1})},
		{CA: ca2, Serials: Serials(42), KeyIDs: []string{"z", "a", "z"}},
		{KeyIDs: []string{"any-ca"}},
		{CA: ca1, Serials: Serials(5001)}, // merges into the first
	}}
	b, err := k.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	want := &KRL{Version: 1, GeneratedDate: 2, Comment: "c", Sections: merged(k.Sections)}
	if !equal(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
	if n := len(got.Sections[0].Serials); n != 2+1999 {
		t.Errorf("first section: %d ranges; want 2001 (5000-5002 merged)", n)
	}
	if len(b) > 2000 {
		t.Errorf("%d bytes: the dense serials were not written as a bitmap", len(b))
	}
}

func equal(a, b *KRL) bool {
	if a.Version != b.Version || a.GeneratedDate != b.GeneratedDate || a.Comment != b.Comment || len(a.Sections) != len(b.Sections) {
		return false
	}
	for i := range a.Sections {
		x, y := a.Sections[i], b.Sections[i]
		if !bytes.Equal(caKey(x.CA), caKey(y.CA)) || !reflect.DeepEqual(x.Serials, y.Serials) || !reflect.DeepEqual(x.KeyIDs, y.KeyIDs) {
			return false
		}
	}
	return true
}

func TestMarshalRefuses(t *testing.T) {
	_, ca := testCA(t, 1)
	for _, tt := range []struct {
		k    KRL
		want string
	}{
		{KRL{Sections: []CertSection{{CA: ca, Serials: Serials(0, 5)}}}, "serial 0 cannot be revoked"},
		{KRL{Sections: []CertSection{{CA: ca, KeyIDs: []string{""}}}}, "empty or with a NUL"},
		{KRL{Sections: []CertSection{{CA: ca, KeyIDs: []string{"a\x00b"}}}}, "empty or with a NUL"},
		{KRL{Comment: "a\x00"}, "comment contains a NUL"},
	} {
		if _, err := tt.k.Marshal(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Marshal(%+v) = %v; want %q", tt.k, err, tt.want)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	_, ca := testCA(t, 1)
	header := cat([]byte(Magic), u32(1), u64(1), u64(1), u64(0), str(nil), str(nil))
	cert := func(subs ...[]byte) []byte {
		return cat(header, []byte{1}, str(cat(str(ca.Marshal()), str(nil), cat(subs...))))
	}
	sub := func(typ byte, data []byte) []byte { return cat([]byte{typ}, str(data)) }
	for _, tt := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "no KRL magic"},
		{"bad magic", cat([]byte("SSHKRL\n\x01"), u32(1)), "no KRL magic"},
		{"format 2", cat([]byte(Magic), u32(2)), "format version 2"},
		{"truncated header", header[:30], "truncated"},
		{"explicit key section", cat(header, []byte{2}, str(nil)), "section type 2 is not supported"},
		{"serial 0 listed", cert(sub(0x20, u64(0))), "serial 0"},
		{"list of 12 bytes", cert(sub(0x20, cat(u64(1), u32(2)))), "truncated"},
		{"range 0-5", cert(sub(0x21, cat(u64(0), u64(5)))), "serial range 0-5"},
		{"range 9-5", cert(sub(0x21, cat(u64(9), u64(5)))), "serial range 9-5"},
		{"range with extra bytes", cert(sub(0x21, cat(u64(1), u64(5), []byte{0}))), "1 bytes left"},
		{"negative bitmap", cert(sub(0x22, cat(u64(1), str([]byte{0x80})))), "negative serial bitmap"},
		{"huge bitmap", cert(sub(0x22, cat(u64(1), str(bytes.Repeat([]byte{1}, 2049))))), "2049 bytes"},
		{"bitmap past 2^64", cert(sub(0x22, cat(u64(math.MaxUint64), str([]byte{3})))), "past 2^64-1"},
		{"bitmap naming serial 0", cert(sub(0x22, cat(u64(0), str([]byte{1})))), "serial 0"},
		{"empty key id", cert(sub(0x23, str(nil))), "empty key id"},
		{"NUL in key id", cert(sub(0x23, str([]byte("a\x00")))), "NUL byte"},
		{"unknown subsection", cert(sub(0x24, nil)), "subsection type 0x24"},
		{"bad CA key", cat(header, []byte{1}, str(cat(str([]byte("junk")), str(nil)))), "CA key"},
		{"length past the end", cat(header, []byte{1}, u32(1000)), "past the end"},
	} {
		_, err := Parse(tt.in)
		if err == nil || !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Parse = %v; want ErrFormat saying %q", tt.name, err, tt.want)
		}
	}
}

func TestIsRevoked(t *testing.T) {
	_, ca1 := testCA(t, 1)
	_, ca2 := testCA(t, 2)
	k := &KRL{Sections: []CertSection{
		{CA: ca1, Serials: append(Serials(7), Range{100, 200})},
		{KeyIDs: []string{"mallory"}},
	}}
	for _, tt := range []struct {
		ca     ssh.PublicKey
		serial uint64
		id     string
		want   bool
	}{
		{ca1, 7, "x", true},
		{ca1, 150, "x", true},
		{ca1, 8, "x", false},
		{ca2, 7, "x", false}, // another CA's serial 7
		{ca2, 8, "mallory", true},
	} {
		c := &ssh.Certificate{SignatureKey: tt.ca, Serial: tt.serial, KeyId: tt.id}
		if got := k.IsRevoked(c); got != tt.want {
			t.Errorf("IsRevoked(%s serial %d id %q) = %v; want %v", ssh.FingerprintSHA256(tt.ca), tt.serial, tt.id, got, tt.want)
		}
	}
}

func certWith(ca ssh.PublicKey, serial uint64) *ssh.Certificate {
	return &ssh.Certificate{SignatureKey: ca, Serial: serial}
}
