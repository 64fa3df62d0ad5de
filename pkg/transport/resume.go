package transport

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"sync"
	"time"
)

// TLS session resumption of QUIC connections (TLS 1.3 PSK with a fresh
// ECDHE exchange, never 0-RTT): a gateway gives each connection a session
// ticket, and a client that reconnects presents it, so that the handshake
// skips the certificates, their parsing and the signatures on both sides.
// It is what lets a restarted gateway take its agents back quickly.
//
// What resumption does not change: the peer's certificate chain is carried
// in the ticket and restored (tls.ConnectionState.PeerCertificates), and
// the gateway verifies it and checks revocation and locks on every
// connection, resumed or not, exactly as for a full handshake (package
// peer); crypto/tls refuses to resume with a client certificate that has
// expired since. A ticket is sealed with AES-256-GCM under a key derived
// from the gateway's ticket secret and the current TicketEpoch, and is
// accepted during that epoch and the next, so that no ticket lives longer
// than two epochs; the secret survives restarts, so tickets do too.

// TicketEpoch is how long one ticket key seals new tickets; a ticket is
// accepted until the end of the epoch after the one that sealed it.
const TicketEpoch = 12 * time.Hour

// ticketVersion is the first byte of every sealed ticket.
const ticketVersion = 1

// TicketSecretSize is the size of the secret ticket keys derive from.
const TicketSecretSize = 32

// Tickets seals and opens the session tickets of a server's connections.
type Tickets struct {
	secret [TicketSecretSize]byte
	now    func() time.Time

	mu    sync.Mutex // guards keys
	keys  map[uint64]cipher.AEAD
	epoch uint64 // the newest epoch in keys
}

// NewTickets returns the tickets of secret (TicketSecretSize random bytes,
// kept secret: whoever holds it can forge a ticket for any certificate);
// now is the clock (nil: time.Now).
func NewTickets(secret []byte, now func() time.Time) (*Tickets, error) {
	if len(secret) != TicketSecretSize {
		return nil, errors.New("session ticket secret: want 32 bytes")
	}
	if now == nil {
		now = time.Now
	}
	t := &Tickets{now: now, keys: map[uint64]cipher.AEAD{}}
	copy(t.secret[:], secret)
	return t, nil
}

// Install makes c seal its session tickets with t and resume only from
// tickets t opens; any other ticket gives a full handshake.
func (t *Tickets) Install(c *tls.Config) {
	c.SessionTicketsDisabled = false
	c.WrapSession = t.wrap
	c.UnwrapSession = t.unwrap
}

func (t *Tickets) epochOf(at time.Time) uint64 {
	return uint64(at.Unix()) / uint64(TicketEpoch/time.Second)
}

// key returns the AEAD of epoch e (derived once, kept for the current and
// previous epochs).
func (t *Tickets) key(e uint64) (cipher.AEAD, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if k, ok := t.keys[e]; ok {
		return k, nil
	}
	var info [8 + len("tunnel session ticket v1 ")]byte
	n := copy(info[:], "tunnel session ticket v1 ")
	binary.BigEndian.PutUint64(info[n:], e)
	raw, err := hkdf.Key(sha256.New, t.secret[:], nil, string(info[:]), 32)
	if err != nil {
		return nil, err
	}
	b, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	k, err := cipher.NewGCM(b)
	if err != nil {
		return nil, err
	}
	if e > t.epoch {
		t.epoch = e
	}
	for old := range t.keys {
		if old+1 < t.epoch {
			delete(t.keys, old)
		}
	}
	t.keys[e] = k
	return k, nil
}

// wrap seals a session: version | epoch | nonce | AES-GCM(state), the
// first two authenticated.
func (t *Tickets) wrap(_ tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	state, err := ss.Bytes()
	if err != nil {
		return nil, err
	}
	e := t.epochOf(t.now())
	k, err := t.key(e)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 9+k.NonceSize(), 9+k.NonceSize()+len(state)+k.Overhead())
	out[0] = ticketVersion
	binary.BigEndian.PutUint64(out[1:9], e)
	if _, err := rand.Read(out[9:]); err != nil {
		return nil, err
	}
	return k.Seal(out, out[9:], state, out[:9]), nil
}

// unwrap opens a ticket sealed in this epoch or the previous one; anything
// else (another gateway's or an older secret's ticket, damage) is not an
// error but a full handshake.
func (t *Tickets) unwrap(ticket []byte, _ tls.ConnectionState) (*tls.SessionState, error) {
	if len(ticket) < 9 || ticket[0] != ticketVersion {
		return nil, nil
	}
	e := binary.BigEndian.Uint64(ticket[1:9])
	now := t.epochOf(t.now())
	if e != now && e+1 != now {
		return nil, nil
	}
	k, err := t.key(e)
	if err != nil {
		return nil, nil
	}
	if len(ticket) < 9+k.NonceSize()+k.Overhead() {
		return nil, nil
	}
	state, err := k.Open(nil, ticket[9:9+k.NonceSize()], ticket[9+k.NonceSize():], ticket[:9])
	if err != nil {
		return nil, nil
	}
	ss, err := tls.ParseSessionState(state)
	if err != nil {
		return nil, nil
	}
	return ss, nil
}

// clientSessions holds the session tickets of this process's client
// connections, keyed by server and by the client certificate they were
// issued to (certSessions): several identities in one process (the load
// test's simulated agents, or an agent before and after a renewal) never
// resume with another's ticket, which would present that other identity.
var clientSessions = tls.NewLRUClientSessionCache(16384)

// certSessions is the session cache of one client configuration: its
// entries are those of clientSessions under the server's key and the
// fingerprint of the certificate the connection presented (or, resumed,
// the one it would present).
type certSessions struct {
	getCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error)

	mu   sync.Mutex // guards used
	used string     // fingerprint of the certificate of the last handshake
}

func fingerprint(c *tls.Certificate) string {
	if c == nil || len(c.Certificate) == 0 {
		return ""
	}
	sum := sha256.Sum256(c.Certificate[0])
	return hex.EncodeToString(sum[:])
}

// certificate is the GetClientCertificate of the configuration: it
// records which certificate the handshake presents.
func (s *certSessions) certificate(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
	c, err := s.getCert(cri)
	if err == nil {
		s.mu.Lock()
		s.used = fingerprint(c)
		s.mu.Unlock()
	}
	return c, err
}

// Get returns a ticket issued to the certificate the client holds now.
func (s *certSessions) Get(key string) (*tls.ClientSessionState, bool) {
	c, err := s.getCert(&tls.CertificateRequestInfo{})
	fp := ""
	if err == nil {
		fp = fingerprint(c)
	}
	if fp == "" {
		return nil, false
	}
	s.mu.Lock()
	s.used = fp
	s.mu.Unlock()
	return clientSessions.Get(key + "|" + fp)
}

// Put keeps a ticket under the certificate the connection presented.
func (s *certSessions) Put(key string, cs *tls.ClientSessionState) {
	s.mu.Lock()
	fp := s.used
	s.mu.Unlock()
	if fp != "" {
		clientSessions.Put(key+"|"+fp, cs)
	}
}
