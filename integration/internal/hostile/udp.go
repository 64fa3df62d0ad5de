package hostile

import (
	"encoding/hex"
	"net"
	"slices"
	"sync"
	"time"
)

// SendUDP sends every packet to dst from one socket bound to the source
// address src, pausing briefly every 200 packets so that a flood of a few
// thousand packets reaches the receiver rather than the sender's own queue.
func SendUDP(src, dst string, packets [][]byte) (sent int, err error) {
	raddr, err := net.ResolveUDPAddr("udp", dst)
	if err != nil {
		return 0, err
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	for i, p := range packets {
		if _, err := c.WriteToUDP(p, raddr); err != nil {
			return sent, err
		}
		sent++
		if i%200 == 199 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	return sent, nil
}

// UDPHold sends one datagram from its own socket and then never answers:
// the client of a handshake that was abandoned. It records the datagrams
// the server sends back until Close, and the source connection IDs of the
// QUIC long-header packets among them: a server that still holds the
// handshake answers a resent Initial with the ID it chose, one that dropped
// it starts a new connection with a new ID. Its goroutine is owned by the
// UDPHold: Close waits for it.
type UDPHold struct {
	conn   *net.UDPConn
	raddr  *net.UDPAddr
	packet []byte
	start  time.Time
	done   chan struct{}

	mu    sync.Mutex // guards count, last and ids
	count int
	last  time.Time
	ids   []string
	once  sync.Once
}

// NewUDPHold sends packet to dst from a socket bound to src.
func NewUDPHold(src, dst string, packet []byte) (*UDPHold, error) {
	raddr, err := net.ResolveUDPAddr("udp", dst)
	if err != nil {
		return nil, err
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)})
	if err != nil {
		return nil, err
	}
	if _, err := c.WriteToUDP(packet, raddr); err != nil {
		c.Close()
		return nil, err
	}
	h := &UDPHold{conn: c, raddr: raddr, packet: packet, start: time.Now(), done: make(chan struct{})}
	go h.read()
	return h, nil
}

func (h *UDPHold) read() {
	defer close(h.done)
	buf := make([]byte, 2048)
	for {
		n, _, err := h.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		h.mu.Lock()
		h.count++
		h.last = time.Now()
		if id, ok := longHeaderSCID(buf[:n]); ok && !slices.Contains(h.ids, id) {
			h.ids = append(h.ids, id)
		}
		h.mu.Unlock()
	}
}

// longHeaderSCID returns the source connection ID of a QUIC long-header
// packet: flags, version (4), DCID length and DCID, SCID length and SCID.
func longHeaderSCID(b []byte) (string, bool) {
	if len(b) < 7 || b[0]&0x80 == 0 {
		return "", false
	}
	i := 6 + int(b[5])
	if i >= len(b) {
		return "", false
	}
	n := int(b[i])
	if i+1+n > len(b) {
		return "", false
	}
	return hex.EncodeToString(b[i+1 : i+1+n]), true
}

// Resend sends the datagram again from the same socket.
func (h *UDPHold) Resend() error {
	_, err := h.conn.WriteToUDP(h.packet, h.raddr)
	return err
}

// ServerIDs returns the distinct connection IDs the server chose, in the
// order they arrived.
func (h *UDPHold) ServerIDs() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ids)
}

// Start is when the datagram was sent.
func (h *UDPHold) Start() time.Time { return h.start }

// Answers returns how many datagrams the server sent back and when the
// last one arrived.
func (h *UDPHold) Answers() (int, time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count, h.last
}

// Close closes the socket and waits for the reader. Safe twice.
func (h *UDPHold) Close() {
	h.once.Do(func() { _ = h.conn.Close() })
	<-h.done
}
