package sshkrl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
)

// Marshal encodes k in OpenSSH's format. Sections for the same CA are
// merged; serials are written as lists, ranges or bitmaps, whichever is
// smallest for each run, so the same revoked set always gives the same
// bytes. It refuses serial 0, an empty key id and a NUL in a key id or the
// comment, which OpenSSH would not read.
func (k *KRL) Marshal() ([]byte, error) {
	if !validText(k.Comment) {
		return nil, errors.New("sshkrl: the comment contains a NUL byte")
	}
	b := []byte(Magic)
	b = binary.BigEndian.AppendUint32(b, FormatVersion)
	b = binary.BigEndian.AppendUint64(b, k.Version)
	b = binary.BigEndian.AppendUint64(b, k.GeneratedDate)
	b = binary.BigEndian.AppendUint64(b, 0) // flags
	b = appendString(b, nil)                // reserved
	b = appendString(b, []byte(k.Comment))
	for _, s := range merged(k.Sections) {
		data, err := s.marshal()
		if err != nil {
			return nil, err
		}
		b = append(b, sectionCertificates)
		b = appendString(b, data)
	}
	return b, nil
}

func (s CertSection) marshal() ([]byte, error) {
	if len(s.Serials) > 0 && s.Serials[0].Lo == 0 {
		return nil, errors.New("sshkrl: serial 0 cannot be revoked (OpenSSH refuses a KRL that names it)")
	}
	for _, id := range s.KeyIDs {
		if id == "" || !validText(id) {
			return nil, fmt.Errorf("sshkrl: key id %q: empty or with a NUL byte", id)
		}
	}
	b := appendString(nil, caKey(s.CA))
	b = appendString(b, nil) // reserved
	var list []byte
	for _, run := range plan(s.Serials) {
		switch run.kind {
		case certSerialList:
			for v := run.lo; ; v++ {
				list = binary.BigEndian.AppendUint64(list, v)
				if v == run.hi {
					break
				}
			}
		case certSerialRange:
			var d []byte
			d = binary.BigEndian.AppendUint64(d, run.lo)
			d = binary.BigEndian.AppendUint64(d, run.hi)
			b = appendSub(b, certSerialRange, d)
		case certSerialBitmap:
			bits := new(big.Int)
			for _, r := range run.members {
				for v := r.Lo; ; v++ {
					bits.SetBit(bits, int(v-run.lo), 1)
					if v == r.Hi {
						break
					}
				}
			}
			d := binary.BigEndian.AppendUint64(nil, run.lo)
			d = appendMpint(d, bits)
			b = appendSub(b, certSerialBitmap, d)
		}
	}
	if len(list) > 0 {
		b = appendSub(b, certSerialList, list)
	}
	if len(s.KeyIDs) > 0 {
		var d []byte
		for _, id := range s.KeyIDs {
			d = appendString(d, []byte(id))
		}
		b = appendSub(b, certKeyID, d)
	}
	return b, nil
}

// run is how one stretch of serials is written.
type run struct {
	kind    byte
	lo, hi  uint64
	members []Range // for a bitmap
}

// Byte costs of each encoding (PROTOCOL.krl): a subsection header is a
// type byte and a length; a listed serial 8 bytes; a range 16; a bitmap
// an offset, an mpint length, a sign byte and one bit per serial of its
// span.
const (
	subHeader   = 1 + 4
	rangeCost   = subHeader + 16
	bitmapFixed = subHeader + 8 + 4 + 1
)

// plan chooses, for sorted merged ranges, the cheapest encoding: a range
// for a run of consecutive serials where 16 bytes beat listing them, a
// bitmap for a cluster of nearby serials where its bits beat listing
// them, and a list (all in one subsection) for the rest.
func plan(rs []Range) []run {
	var out []run
	for i := 0; i < len(rs); {
		// Grow a cluster of nearby short ranges for a bitmap.
		j, listed := i, uint64(0)
		for ; j < len(rs); j++ {
			r := rs[j]
			if r.Hi-r.Lo >= 2 {
				break // three or more: a range (rangeCost) beats listing them
			}
			if j > i && (r.Lo-rs[j-1].Hi > 64 || r.Hi-rs[i].Lo >= maxBitmapBits-1) {
				break
			}
			listed += r.Hi - r.Lo + 1
		}
		if j > i {
			span := rs[j-1].Hi - rs[i].Lo + 1
			if bitmapFixed+(span+7)/8 < 8*listed {
				out = append(out, run{kind: certSerialBitmap, lo: rs[i].Lo, hi: rs[j-1].Hi, members: rs[i:j]})
			} else {
				for _, r := range rs[i:j] {
					out = append(out, run{kind: certSerialList, lo: r.Lo, hi: r.Hi})
				}
			}
			i = j
			continue
		}
		out = append(out, run{kind: certSerialRange, lo: rs[i].Lo, hi: rs[i].Hi})
		i++
	}
	return out
}

func appendString(b, s []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func appendSub(b []byte, typ byte, data []byte) []byte {
	return appendString(append(b, typ), data)
}

// appendMpint appends a non-negative SSH mpint (RFC 4251 section 5).
func appendMpint(b []byte, x *big.Int) []byte {
	v := x.Bytes()
	if len(v) > 0 && v[0]&0x80 != 0 {
		v = append([]byte{0}, v...)
	}
	return appendString(b, v)
}
