package hostile

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"

	"github.com/quic-go/quic-go"
)

// initialSize is the size every client Initial datagram is padded to.
const initialSize = 1200

// CaptureInitials returns n real QUIC v1 Initial datagrams, each the first
// flight of a new connection (its own connection IDs and a complete TLS 1.3
// ClientHello offering alpn, with an X25519 key share so that it fits one
// datagram). They are captured from quic-go clients dialling a loopback
// socket that never answers, so no server sees them until the caller sends
// them: a server that receives one starts a handshake nobody will finish.
func CaptureInitials(n int, alpn string) ([][]byte, error) {
	hole, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	defer hole.Close()
	out := make([][]byte, 0, n)
	for range n {
		p, err := captureOne(hole, alpn)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

func captureOne(hole *net.UDPConn, alpn string) ([]byte, error) {
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	tr := &quic.Transport{Conn: udp}
	defer func() { tr.Close(); udp.Close() }()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tlsConf := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{alpn}, MinVersion: tls.VersionTLS13,
			CurvePreferences: []tls.CurveID{tls.X25519}}
		if c, err := tr.Dial(ctx, hole.LocalAddr(), tlsConf, &quic.Config{HandshakeIdleTimeout: captureTimeout}); err == nil {
			_ = c.CloseWithError(0, "")
		}
	}()
	defer func() { cancel(); <-done }()
	buf := make([]byte, 2048)
	deadline := time.Now().Add(captureTimeout)
	for {
		_ = hole.SetReadDeadline(deadline)
		n, from, err := hole.ReadFromUDP(buf)
		if err != nil {
			return nil, fmt.Errorf("capture a QUIC Initial: %w", err)
		}
		// Skip late retransmissions of an earlier capture.
		if from.Port != udp.LocalAddr().(*net.UDPAddr).Port {
			continue
		}
		if n < initialSize || buf[0]&0xf0 != 0xc0 {
			return nil, errors.New("capture a QUIC Initial: the first datagram is not a padded Initial")
		}
		return append([]byte(nil), buf[:n]...), nil
	}
}

// InitialJunk returns a datagram that starts like a QUIC v1 Initial (long
// header, fresh 8-byte connection IDs, no token, a length that matches the
// datagram) and goes on with random bytes, padded to 1200 bytes like a real
// client's: it passes every check made before decryption.
func InitialJunk() []byte {
	b := []byte{0xc3, 0, 0, 0, 1, 8}
	b = append(b, Garbage(8)...)
	b = append(b, 8)
	b = append(b, Garbage(8)...)
	b = append(b, 0) // token length
	rest := initialSize - len(b) - 2
	b = append(b, 0x40|byte(rest>>8), byte(rest)) // 2-byte varint
	return append(b, Garbage(rest)...)
}

// ShortHeaderJunk returns a datagram that looks like a 1-RTT packet of a
// connection the receiver does not know (fixed bit set, random rest).
func ShortHeaderJunk(n int) []byte {
	b := Garbage(n)
	b[0] = 0x40 | b[0]&0x3f
	return b
}

// Flood returns n datagrams of mixed junk: random bytes of random sizes,
// junk Initials and junk short-header packets.
func Flood(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		switch i % 3 {
		case 0:
			size := 1 + int(Garbage(2)[0])*5 // 1..1276 bytes
			out[i] = Garbage(size)
		case 1:
			out[i] = InitialJunk()
		default:
			out[i] = ShortHeaderJunk(64 + i%1000)
		}
	}
	return out
}

// ForeignClientCert returns a self-signed Ed25519 client certificate for
// name: a well-formed certificate that no cluster issued.
func ForeignClientCert(name string) (tls.Certificate, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}, nil
}
