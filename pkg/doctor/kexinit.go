package doctor

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Bounds of what ReadServerHello reads, so that a hostile server cannot
// make the doctor read or allocate without limit.
const (
	maxLineLen  = 255   // RFC 4253 §4.2, CR LF included
	maxPreLines = 32    // lines a server may send before its version
	maxPacket   = 35000 // RFC 4253 §6.1
	maxNames    = 256   // names in one name-list
)

// msgKexInit is SSH_MSG_KEXINIT.
const msgKexInit = 20

// KexInit is the algorithm lists of an SSH_MSG_KEXINIT (RFC 4253 §7.1).
type KexInit struct {
	Kex, HostKey             []string
	CiphersCS, CiphersSC     []string
	MACsCS, MACsSC           []string
	CompressCS, CompressSC   []string
	LanguagesCS, LanguagesSC []string
}

var errNotSSH = errors.New("not an SSH server")

// ReadServerHello reads what an SSH server sends first, in cleartext: its
// version line (after any other lines, RFC 4253 §4.2) and its first binary
// packet, which must be its KEXINIT. Reads are bounded.
func ReadServerHello(r io.Reader) (version string, k KexInit, err error) {
	br := bufio.NewReaderSize(io.LimitReader(r, maxPreLines*maxLineLen+4+maxPacket), 512)
	for i := 0; ; i++ {
		if i >= maxPreLines {
			return "", k, fmt.Errorf("%w: no version line in the first %d lines", errNotSSH, maxPreLines)
		}
		line, err := readLine(br)
		if err != nil {
			return "", k, err
		}
		if strings.HasPrefix(line, "SSH-") {
			if !strings.HasPrefix(line, "SSH-2.0-") && !strings.HasPrefix(line, "SSH-1.99-") {
				return line, k, fmt.Errorf("the server speaks %q, not SSH 2", line)
			}
			version = line
			break
		}
	}
	var hdr [4]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return version, k, fmt.Errorf("read the server's first packet: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < 2 || n > maxPacket {
		return version, k, fmt.Errorf("%w: first packet of %d bytes", errNotSSH, n)
	}
	pkt := make([]byte, n)
	if _, err := io.ReadFull(br, pkt); err != nil {
		return version, k, fmt.Errorf("read the server's first packet: %w", err)
	}
	pad := int(pkt[0])
	if pad+1 >= len(pkt) {
		return version, k, fmt.Errorf("%w: first packet's padding (%d) exceeds it", errNotSSH, pad)
	}
	k, err = ParseKexInit(pkt[1 : len(pkt)-pad])
	return version, k, err
}

// readLine reads one line of at most maxLineLen bytes, without its CR LF.
func readLine(br *bufio.Reader) (string, error) {
	var line []byte
	for {
		b, err := br.ReadByte()
		if err != nil {
			return "", fmt.Errorf("read the server's version line: %w", err)
		}
		if b == '\n' {
			return string(bytes.TrimSuffix(line, []byte{'\r'})), nil
		}
		if len(line) >= maxLineLen {
			return "", fmt.Errorf("%w: a line longer than %d bytes before the version", errNotSSH, maxLineLen)
		}
		line = append(line, b)
	}
}

// ParseKexInit parses the payload of an SSH_MSG_KEXINIT: the message
// number, a 16-byte cookie and ten name-lists (the boolean and reserved
// word after them are not needed).
func ParseKexInit(p []byte) (KexInit, error) {
	var k KexInit
	if len(p) < 17 || p[0] != msgKexInit {
		return k, fmt.Errorf("%w: the first packet is not a KEXINIT", errNotSSH)
	}
	p = p[17:]
	lists := []*[]string{&k.Kex, &k.HostKey, &k.CiphersCS, &k.CiphersSC, &k.MACsCS, &k.MACsSC,
		&k.CompressCS, &k.CompressSC, &k.LanguagesCS, &k.LanguagesSC}
	for i, l := range lists {
		if len(p) < 4 {
			return k, fmt.Errorf("%w: KEXINIT cut short at name-list %d", errNotSSH, i)
		}
		n := binary.BigEndian.Uint32(p)
		p = p[4:]
		if uint64(n) > uint64(len(p)) {
			return k, fmt.Errorf("%w: KEXINIT name-list %d overruns the packet", errNotSSH, i)
		}
		names, err := nameList(p[:n])
		if err != nil {
			return k, fmt.Errorf("KEXINIT name-list %d: %w", i, err)
		}
		*l = names
		p = p[n:]
	}
	return k, nil
}

func nameList(b []byte) ([]string, error) {
	if len(b) == 0 {
		return nil, nil
	}
	names := strings.Split(string(b), ",")
	if len(names) > maxNames {
		return nil, fmt.Errorf("%w: more than %d names", errNotSSH, maxNames)
	}
	for _, n := range names {
		if n == "" {
			return nil, fmt.Errorf("%w: an empty name", errNotSSH)
		}
		for i := 0; i < len(n); i++ {
			if n[i] <= ' ' || n[i] >= 0x7f {
				return nil, fmt.Errorf("%w: a name with a non-printable byte", errNotSSH)
			}
		}
	}
	return names, nil
}

// MarshalKexInit encodes k as a KEXINIT payload (zero cookie): the inverse
// of ParseKexInit, for tests and fakes.
func MarshalKexInit(k KexInit) []byte {
	b := make([]byte, 17)
	b[0] = msgKexInit
	for _, l := range [][]string{k.Kex, k.HostKey, k.CiphersCS, k.CiphersSC, k.MACsCS, k.MACsSC,
		k.CompressCS, k.CompressSC, k.LanguagesCS, k.LanguagesSC} {
		s := strings.Join(l, ",")
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	b = append(b, 0)             // first_kex_packet_follows
	return append(b, 0, 0, 0, 0) // reserved
}

// MarshalPacket wraps a payload as an unencrypted binary packet (RFC 4253
// §6) with the minimum padding.
func MarshalPacket(payload []byte) []byte {
	pad := 8 - (5+len(payload))%8
	if pad < 4 {
		pad += 8
	}
	b := binary.BigEndian.AppendUint32(nil, uint32(1+len(payload)+pad))
	b = append(b, byte(pad))
	b = append(b, payload...)
	return append(b, make([]byte, pad)...)
}
