package gateway

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/tunnelhq/tunnel/pkg/transport"
)

// TicketSecretFile holds the secret the QUIC session tickets' keys derive
// from (0600; pkg/transport's Tickets): kept across restarts, so that the
// agents of a restarted gateway resume their TLS sessions instead of
// full handshakes (the gateway still verifies every certificate, its
// revocation and the principal's lock). It is as sensitive as the KEK
// file beside it: whoever reads it can forge a ticket for any certificate
// to this gateway. Removing it makes every ticket useless (the next start
// writes a new one).
const TicketSecretFile = "quic-tickets.key"

// ticketSecret reads the session ticket secret, creating it on first use.
func ticketSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		b = make([]byte, transport.TicketSecretSize)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("write %s: %w", path, err)
		}
		return b, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) != transport.TicketSecretSize {
		return nil, fmt.Errorf("%s is damaged (%d bytes, want %d): remove it", path, len(b), transport.TicketSecretSize)
	}
	return b, nil
}
