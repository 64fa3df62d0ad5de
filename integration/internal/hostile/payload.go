package hostile

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// SSHBanner is the version line an OpenSSH 9.6 client sends first.
const SSHBanner = "SSH-2.0-OpenSSH_9.6\r\n"

// PGSSLRequest is the first message of a PostgreSQL client asking for TLS.
var PGSSLRequest = []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}

// Garbage returns n random bytes.
func Garbage(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// captureTimeout bounds each in-memory capture below.
const captureTimeout = 5 * time.Second

// TLSClientHello returns the first record a crypto/tls client sends for
// serverName: a complete TLS 1.3 ClientHello, record header included.
func TLSClientHello(serverName string) ([]byte, error) {
	c1, c2 := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		cfg := &tls.Config{ServerName: serverName, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
		_ = tls.Client(c1, cfg).Handshake() // ends when c1 closes
	}()
	defer func() { c1.Close(); c2.Close(); <-done }()
	_ = c2.SetDeadline(time.Now().Add(captureTimeout))
	var hdr [5]byte
	if _, err := io.ReadFull(c2, hdr[:]); err != nil {
		return nil, fmt.Errorf("capture ClientHello: %w", err)
	}
	if hdr[0] != 0x16 {
		return nil, fmt.Errorf("capture ClientHello: record type %#x, want a handshake (0x16)", hdr[0])
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[3:]))
	if _, err := io.ReadFull(c2, body); err != nil {
		return nil, fmt.Errorf("capture ClientHello: %w", err)
	}
	return append(hdr[:], body...), nil
}

// TLSHeaderThenJunk returns the record and handshake headers of hello (a
// ClientHello as TLSClientHello returns it) followed by random bytes of the
// length they announce: a server parses a ClientHello of the right size
// whose contents are junk.
func TLSHeaderThenJunk(hello []byte) []byte {
	const headers = 5 + 4 // record header, handshake type and length
	if len(hello) < headers {
		return Garbage(512)
	}
	return append(append([]byte{}, hello[:headers]...), Garbage(len(hello)-headers)...)
}

// SSHKexInit returns the first binary packet (SSH_MSG_KEXINIT, unencrypted)
// that an x/crypto/ssh client sends after the version exchange. Send it
// after SSHBanner to start a key exchange that never finishes.
func SSHKexInit() ([]byte, error) {
	c1, c2 := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		cfg := &ssh.ClientConfig{User: "hostile", HostKeyCallback: ssh.InsecureIgnoreHostKey()}
		if conn, _, _, err := ssh.NewClientConn(c1, "hostile:22", cfg); err == nil {
			conn.Close()
		}
	}()
	defer func() { c1.Close(); c2.Close(); <-done }()
	_ = c2.SetDeadline(time.Now().Add(captureTimeout))
	br := bufio.NewReader(c2)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "SSH-2.0-") {
		return nil, fmt.Errorf("capture KEXINIT: client version %q: %v", line, err)
	}
	if _, err := io.WriteString(c2, SSHBanner); err != nil {
		return nil, fmt.Errorf("capture KEXINIT: %w", err)
	}
	var hdr [4]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return nil, fmt.Errorf("capture KEXINIT: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < 2 || n > 64<<10 {
		return nil, fmt.Errorf("capture KEXINIT: packet length %d", n)
	}
	pkt := make([]byte, n)
	if _, err := io.ReadFull(br, pkt); err != nil {
		return nil, fmt.Errorf("capture KEXINIT: %w", err)
	}
	if pkt[1] != 20 { // after the padding length byte
		return nil, errors.New("capture KEXINIT: the first packet is not SSH_MSG_KEXINIT")
	}
	return append(hdr[:], pkt...), nil
}
