package sshkrl

import (
	"encoding/binary"
	"fmt"
	"math/big"

	"golang.org/x/crypto/ssh"
)

// Parse reads a KRL with the checks OpenSSH applies (format version 1,
// no serial 0, no serial range or bitmap past 2^64-1, bitmaps of at most
// 2048 bytes, no trailing bytes in a subsection, no NUL in texts) and
// two more: no empty key id, so that what it accepts Marshal writes, and
// at most MaxSerials serial entries in all (a bitmap's set bits count one
// each), so that memory stays proportional to the input. It
// returns the sections merged per CA, with serials and key ids sorted, as
// Marshal writes them. Errors wrap ErrFormat.
func Parse(b []byte) (*KRL, error) {
	r := reader{b: b}
	if magic := r.bytes(len(Magic)); string(magic) != Magic {
		return nil, fmt.Errorf("%w: no KRL magic", ErrFormat)
	}
	if v := r.uint32(); r.err == nil && v != FormatVersion {
		return nil, fmt.Errorf("%w: format version %d", ErrFormat, v)
	}
	k := &KRL{Version: r.uint64(), GeneratedDate: r.uint64()}
	_ = r.uint64() // flags: none defined
	_ = r.string() // reserved
	k.Comment = r.text()
	budget := MaxSerials
	for r.err == nil && len(r.b) > 0 {
		typ := r.byte()
		data := r.string()
		if r.err != nil {
			break
		}
		if typ != sectionCertificates {
			return nil, fmt.Errorf("%w: section type %d is not supported (only certificate sections)", ErrFormat, typ)
		}
		s, err := parseCertSection(data, &budget)
		if err != nil {
			return nil, err
		}
		k.Sections = append(k.Sections, s)
	}
	if r.err != nil {
		return nil, r.err
	}
	k.Sections = merged(k.Sections)
	return k, nil
}

func parseCertSection(b []byte, budget *int) (CertSection, error) {
	tooMany := fmt.Errorf("%w: more than %d revoked serials", ErrFormat, MaxSerials)
	r := reader{b: b}
	var s CertSection
	if ca := r.string(); r.err == nil && len(ca) > 0 {
		k, err := ssh.ParsePublicKey(ca)
		if err != nil {
			return s, fmt.Errorf("%w: CA key: %v", ErrFormat, err)
		}
		s.CA = k
	}
	_ = r.string() // reserved
	for r.err == nil && len(r.b) > 0 {
		typ := r.byte()
		sub := reader{b: r.string()}
		if r.err != nil {
			break
		}
		switch typ {
		case certSerialList:
			for sub.err == nil && len(sub.b) > 0 {
				v := sub.uint64()
				if *budget--; *budget < 0 {
					return s, tooMany
				}
				s.Serials = append(s.Serials, Range{v, v})
			}
		case certSerialRange:
			lo, hi := sub.uint64(), sub.uint64()
			if sub.err == nil && (lo == 0 || lo > hi) {
				return s, fmt.Errorf("%w: serial range %d-%d", ErrFormat, lo, hi)
			}
			if *budget--; *budget < 0 {
				return s, tooMany
			}
			s.Serials = append(s.Serials, Range{lo, hi})
		case certSerialBitmap:
			off := sub.uint64()
			bits := sub.mpint()
			if sub.err != nil {
				break
			}
			if n := bits.BitLen(); n > 0 && off+uint64(n-1) < off {
				return s, fmt.Errorf("%w: serial bitmap past 2^64-1", ErrFormat)
			}
			for i := 0; i < bits.BitLen(); i++ {
				if bits.Bit(i) == 1 {
					if *budget--; *budget < 0 {
						return s, tooMany
					}
					s.Serials = append(s.Serials, Range{off + uint64(i), off + uint64(i)})
				}
			}
		case certKeyID:
			for sub.err == nil && len(sub.b) > 0 {
				id := sub.text()
				if sub.err == nil && id == "" {
					sub.err = fmt.Errorf("%w: an empty key id", ErrFormat)
				}
				s.KeyIDs = append(s.KeyIDs, id)
			}
		default:
			return s, fmt.Errorf("%w: certificate subsection type %#x", ErrFormat, typ)
		}
		if sub.err == nil && len(sub.b) > 0 {
			sub.err = fmt.Errorf("%w: %d bytes left in a certificate subsection", ErrFormat, len(sub.b))
		}
		if sub.err != nil {
			return s, sub.err
		}
	}
	if r.err != nil {
		return s, r.err
	}
	for _, rg := range s.Serials {
		if rg.Lo == 0 {
			return s, fmt.Errorf("%w: serial 0", ErrFormat)
		}
	}
	return s, nil
}

// reader reads SSH wire types; the first error sticks and later reads
// return zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b) < n {
		r.err = fmt.Errorf("%w: truncated", ErrFormat)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	if v := r.bytes(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) uint32() uint32 {
	if v := r.bytes(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (r *reader) uint64() uint64 {
	if v := r.bytes(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (r *reader) string() []byte {
	n := r.uint32()
	if r.err == nil && uint64(n) > uint64(len(r.b)) {
		r.err = fmt.Errorf("%w: a length of %d past the end", ErrFormat, n)
		return nil
	}
	return r.bytes(int(n))
}

// text is a string without NUL bytes (OpenSSH's cstring).
func (r *reader) text() string {
	v := r.string()
	if r.err == nil && !validText(string(v)) {
		r.err = fmt.Errorf("%w: a NUL byte in a text", ErrFormat)
	}
	return string(v)
}

// mpint reads a non-negative mpint of at most 2048 bytes and a sign byte.
func (r *reader) mpint() *big.Int {
	v := r.string()
	if r.err != nil {
		return new(big.Int)
	}
	switch {
	case len(v) > 0 && v[0]&0x80 != 0:
		r.err = fmt.Errorf("%w: a negative serial bitmap", ErrFormat)
	case len(v) > maxBitmapBits/8+1 || len(v) == maxBitmapBits/8+1 && v[0] != 0:
		r.err = fmt.Errorf("%w: a serial bitmap of %d bytes (at most %d)", ErrFormat, len(v), maxBitmapBits/8)
	}
	return new(big.Int).SetBytes(v)
}
