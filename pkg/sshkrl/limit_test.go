package sshkrl

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// TestParseBoundsSerials: bitmaps of alternating bits (the densest
// expansion: one range per set bit) past MaxSerials are refused instead
// of expanded; MaxSerials itself, as a list, parses.
func TestParseBoundsSerials(t *testing.T) {
	_, ca := testCA(t, 1)
	header := cat([]byte(Magic), u32(1), u64(1), u64(1), u64(0), str(nil), str(nil))
	bitmap := bytes.Repeat([]byte{0x55}, 2048) // 8192 bits, every other one set
	var subs [][]byte
	for i := range MaxSerials/8192 + 2 {
		subs = append(subs, []byte{certSerialBitmap}, str(cat(u64(1+uint64(i)*2048*8), str(bitmap))))
	}
	in := cat(header, []byte{1}, str(cat(str(ca.Marshal()), str(nil), cat(subs...))))
	_, err := Parse(in)
	if err == nil || !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "more than 1000000 revoked serials") {
		t.Fatalf("%d bytes of bitmaps naming %d serials: Parse = %v; want a refusal", len(in), (MaxSerials/8192+2)*4096, err)
	}

	list := make([]byte, 0, 8*MaxSerials)
	for i := range MaxSerials {
		list = append(list, u64(uint64(i)*3+1)...)
	}
	k, err := Parse(cat(header, []byte{1}, str(cat(str(ca.Marshal()), str(nil), []byte{certSerialList}, str(list)))))
	if err != nil || len(k.Sections) != 1 || len(k.Sections[0].Serials) != MaxSerials {
		t.Fatalf("a list of MaxSerials serials: %v; want it parsed", err)
	}
	_, err = Parse(cat(header, []byte{1}, str(cat(str(ca.Marshal()), str(nil), []byte{certSerialList}, str(append(list, u64(1<<40)...))))))
	if err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("a list of MaxSerials+1 serials: %v; want a refusal", err)
	}
}
