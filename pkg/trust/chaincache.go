package trust

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"sync"
	"time"

	"github.com/tunnelhq/tunnel/pkg/identity"
)

// ChainCache is VerifyClusterChain and VerifyPinned with a memory: a
// chain it accepted is accepted again without its signatures being
// checked again, as long as it is asked the same question (the same roots
// pool and cluster, or the same pin and server name) and every
// certificate of the chain it verified is valid. A direct connection
// between two agents presents the same chain at every TLS handshake (a
// resumed session too), and the signature checks were a tenth of the CPU
// of a new direct stream; an agent's gateway presents the same chain at
// every reconnection. Refusals are not remembered. A nil *ChainCache
// verifies every time. Safe for concurrent use.
type ChainCache struct {
	mu      sync.Mutex
	max     int
	entries map[[sha256.Size]byte]cachedChain
}

type cachedChain struct {
	roots   *x509.CertPool // cluster chains: the pool they were verified against
	cluster string
	id      identity.ID       // cluster chains: whom the chain names
	ca      *x509.Certificate // pinned chains: the pinned CA
	valid   window
}

// NewChainCache returns a cache of at most max chains.
func NewChainCache(max int) *ChainCache {
	return &ChainCache{max: max, entries: map[[sha256.Size]byte]cachedChain{}}
}

// Verify is VerifyClusterChain(chain, roots, cluster, now).
func (c *ChainCache) Verify(chain []*x509.Certificate, roots *x509.CertPool, cluster string, now time.Time) (identity.ID, error) {
	if c == nil || len(chain) == 0 {
		return VerifyClusterChain(chain, roots, cluster, now)
	}
	raw := make([][]byte, len(chain))
	for i, cert := range chain {
		raw[i] = cert.Raw
	}
	key := chainKey("cluster", raw)
	if e, ok := c.lookup(key, now); ok && e.roots == roots && e.cluster == cluster {
		return e.id, nil
	}
	id, w, err := verifyClusterChain(chain, roots, cluster, now)
	if err != nil {
		return id, err
	}
	c.store(key, cachedChain{roots: roots, cluster: cluster, id: id, valid: w}, now)
	return id, nil
}

// VerifyPinned is VerifyPinned(rawCerts, pin, serverName, now).
func (c *ChainCache) VerifyPinned(rawCerts [][]byte, pin, serverName string, now time.Time) (*x509.Certificate, error) {
	if c == nil || len(rawCerts) == 0 {
		return VerifyPinned(rawCerts, pin, serverName, now)
	}
	// The pin and the name are part of the question, hence of the key.
	key := chainKey("pinned", append([][]byte{[]byte(pin), []byte(serverName)}, rawCerts...))
	if e, ok := c.lookup(key, now); ok && e.ca != nil {
		return e.ca, nil
	}
	ca, w, err := verifyPinned(rawCerts, pin, serverName, now)
	if err != nil {
		return nil, err
	}
	c.store(key, cachedChain{ca: ca, valid: w}, now)
	return ca, nil
}

// PinnedClientConfig is the package's PinnedClientConfig, its chain
// checks made through c.
func (c *ChainCache) PinnedClientConfig(pin, serverName string, now func() time.Time) *tls.Config {
	if now == nil {
		now = time.Now
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		// Verification is done by VerifyConnection against the pin instead of
		// the system roots, so the default check is switched off here and
		// replaced, never skipped. VerifyConnection runs on resumed
		// sessions too.
		InsecureSkipVerify: true, //nolint:gosec // replaced by VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			raw := make([][]byte, len(cs.PeerCertificates))
			for i, cert := range cs.PeerCertificates {
				raw[i] = cert.Raw
			}
			_, err := c.VerifyPinned(raw, pin, serverName, now())
			return err
		},
	}
}

// lookup returns the entry under key if it holds at now.
func (c *ChainCache) lookup(key [sha256.Size]byte, now time.Time) (cachedChain, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	return e, ok && e.valid.holds(now)
}

// store remembers e under key, making room first when the cache is full:
// the entries no longer valid go, and if that leaves it more than seven
// eighths full, others (in the map's random order) until it does not. So
// a full cache is swept at most once per eighth of its size of new
// chains, not at every one.
func (c *ChainCache) store(key [sha256.Size]byte, e cachedChain, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		keep := c.max - max(1, c.max/8)
		for k, old := range c.entries {
			if !old.valid.holds(now) {
				delete(c.entries, k)
			}
		}
		for k := range c.entries {
			if len(c.entries) <= keep {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[key] = e
}

// chainKey hashes what (a domain) and the parts, each with its length.
func chainKey(what string, parts [][]byte) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(what))
	var n [4]byte
	for _, p := range parts {
		binary.BigEndian.PutUint32(n[:], uint32(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// Len returns the number of chains remembered.
func (c *ChainCache) Len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
