package sshkrl

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// seeds are KRLs of every shape Marshal writes.
func seeds(f *testing.F) [][]byte {
	_, ca := testCA(f, 1)
	var dense []uint64
	for v := uint64(300); v < 400; v += 2 {
		dense = append(dense, v)
	}
	var out [][]byte
	for _, k := range []*KRL{
		{},
		{Version: 3, GeneratedDate: 9, Comment: "c", Sections: []CertSection{{CA: ca, Serials: Serials(1, 5, 1<<63)}}},
		{Sections: []CertSection{{CA: ca, Serials: append(Serials(dense...), Range{10, 20})}, {KeyIDs: []string{"k"}}}},
	} {
		b, err := k.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// FuzzDecode: Parse never panics, and whatever it accepts Marshal writes
// and Parse reads back the same.
func FuzzDecode(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := Parse(b)
		if err != nil {
			return
		}
		out, err := k.Marshal()
		if err != nil {
			t.Fatalf("Parse accepted what Marshal refuses: %v", err)
		}
		k2, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse refuses what Marshal wrote: %v\n%x", err, out)
		}
		if !equal(k, k2) {
			t.Fatalf("round trip changed the KRL:\n%+v\n%+v", k, k2)
		}
		out2, err := k2.Marshal()
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("Marshal is not stable: %v\n%x\n%x", err, out, out2)
		}
	})
}

// FuzzRoundTrip: any revoked set (serials drawn from the fuzzer's bytes,
// clustered or spread, with key ids) survives Marshal and Parse, and
// IsRevoked answers the same before and after.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8}, uint8(0), "alice")
	f.Add(bytes.Repeat([]byte{0, 0, 0, 0, 0, 0, 1, 9}, 20), uint8(3), "")
	f.Add(bytes.Repeat([]byte{0xff}, 64), uint8(200), "x")
	f.Fuzz(func(t *testing.T, raw []byte, spread uint8, keyID string) {
		_, ca := testCA(t, 1)
		s := CertSection{CA: ca}
		base := uint64(1)
		for len(raw) >= 8 {
			v := binary.BigEndian.Uint64(raw)
			raw = raw[8:]
			if spread%4 != 0 { // clustered: small steps from a base
				base += v % uint64(spread)
				v = base
			}
			if v == 0 {
				continue
			}
			s.Serials = append(s.Serials, Range{v, v})
			if spread%7 == 1 && v < 1<<63 {
				s.Serials = append(s.Serials, Range{v, v + uint64(spread)})
			}
		}
		if keyID != "" && validText(keyID) {
			s.KeyIDs = []string{keyID}
		}
		k := &KRL{Version: uint64(spread), Sections: []CertSection{s}}
		b, err := k.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		got, err := Parse(b)
		if err != nil {
			t.Fatalf("Parse(Marshal()): %v\n%x", err, b)
		}
		want := &KRL{Version: k.Version, Sections: merged(k.Sections)}
		if len(want.Sections[0].Serials) == 0 && len(want.Sections[0].KeyIDs) == 0 {
			want.Sections[0] = CertSection{CA: ca}
		}
		if !equal(got, want) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
		}
		for _, r := range want.Sections[0].Serials {
			for _, v := range []uint64{r.Lo, r.Hi, r.Lo - 1, r.Hi + 1} {
				c := certWith(ca, v)
				if k.IsRevoked(c) != got.IsRevoked(c) {
					t.Fatalf("serial %d: IsRevoked differs after the round trip", v)
				}
			}
		}
	})
}
