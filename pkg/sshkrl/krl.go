package sshkrl

import (
	"bytes"
	"cmp"
	"errors"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Magic opens every KRL.
const Magic = "SSHKRL\n\x00"

// FormatVersion is the only format version of PROTOCOL.krl.
const FormatVersion = 1

// Section and certificate subsection types (PROTOCOL.krl).
const (
	sectionCertificates = 1

	certSerialList   = 0x20
	certSerialRange  = 0x21
	certSerialBitmap = 0x22
	certKeyID        = 0x23
)

// maxBitmapBits is the widest bitmap OpenSSH reads: an mpint of at most
// 2048 bytes (SSHBUF_MAX_BIGNUM).
const maxBitmapBits = 2048 * 8

// MaxSerials bounds the serial entries Parse reads from one KRL (a
// serial, a range, or a set bit of a bitmap each): a million, 8 MiB as a
// serial list. Beyond it Parse fails rather than grow its memory ~500
// times the input (bitmaps expand to one range per set bit).
const MaxSerials = 1_000_000

// KRL is a key revocation list.
type KRL struct {
	// Version increases each time the list changes.
	Version uint64
	// GeneratedDate is when the list was made, in seconds since the Unix
	// epoch.
	GeneratedDate uint64
	// Comment is free text; it may not contain a NUL byte.
	Comment string
	// Sections revoke certificates, per CA.
	Sections []CertSection
}

// CertSection revokes certificates signed by one CA.
type CertSection struct {
	// CA is the CA's public key; nil means certificates of any CA.
	CA ssh.PublicKey
	// Serials are the revoked serial numbers. Marshal and Parse give
	// them sorted, merged and without serial 0.
	Serials []Range
	// KeyIDs are revoked certificate key ids (none empty, none with a NUL
	// byte).
	KeyIDs []string
}

// Range is the serials from Lo to Hi, both included.
type Range struct{ Lo, Hi uint64 }

// Serials returns single-serial ranges, for CertSection.Serials.
func Serials(serials ...uint64) []Range {
	rs := make([]Range, len(serials))
	for i, s := range serials {
		rs[i] = Range{s, s}
	}
	return rs
}

// ErrFormat is wrapped by every error of Parse about the bytes it read.
var ErrFormat = errors.New("sshkrl: not a valid KRL")

// IsRevoked reports whether k revokes cert: its serial or key id is listed
// in a section for its signing CA or for any CA.
func (k *KRL) IsRevoked(cert *ssh.Certificate) bool {
	var ca []byte
	if cert.SignatureKey != nil {
		ca = cert.SignatureKey.Marshal()
	}
	for _, s := range k.Sections {
		if s.CA != nil && !bytes.Equal(s.CA.Marshal(), ca) {
			continue
		}
		if slices.Contains(s.KeyIDs, cert.KeyId) {
			return true
		}
		for _, r := range s.Serials {
			if r.Lo <= cert.Serial && cert.Serial <= r.Hi {
				return true
			}
		}
	}
	return false
}

// normalize sorts and merges ranges (overlapping or adjacent).
func normalize(rs []Range) []Range {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(a, b Range) int { return cmp.Compare(a.Lo, b.Lo) })
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && (r.Lo <= out[n-1].Hi || r.Lo-1 == out[n-1].Hi) {
			out[n-1].Hi = max(out[n-1].Hi, r.Hi)
			continue
		}
		out = append(out, r)
	}
	return out
}

// normalizeIDs sorts key ids and removes repeats.
func normalizeIDs(ids []string) []string {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	return slices.Compact(ids)
}

// caKey is the wire form of a section's CA, empty for any CA.
func caKey(k ssh.PublicKey) []byte {
	if k == nil {
		return nil
	}
	return k.Marshal()
}

// merged returns k's sections normalized, one per CA, in the order of
// each CA's first section.
func merged(secs []CertSection) []CertSection {
	var out []CertSection
	index := map[string]int{}
	for _, s := range secs {
		key := string(caKey(s.CA))
		i, ok := index[key]
		if !ok {
			i = len(out)
			index[key] = i
			out = append(out, CertSection{CA: s.CA})
		}
		out[i].Serials = append(out[i].Serials, s.Serials...)
		out[i].KeyIDs = append(out[i].KeyIDs, s.KeyIDs...)
	}
	for i := range out {
		out[i].Serials = normalize(out[i].Serials)
		out[i].KeyIDs = normalizeIDs(out[i].KeyIDs)
		if len(out[i].Serials) == 0 {
			out[i].Serials = nil
		}
		if len(out[i].KeyIDs) == 0 {
			out[i].KeyIDs = nil
		}
	}
	return out
}

func validText(s string) bool { return !strings.ContainsRune(s, 0) }
