package trust

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"sync"
	"time"

	"github.com/tunnelhq/tunnel/pkg/identity"
)

// ChainCache is VerifyClusterChain with a memory: a chain it accepted is
// accepted again without its signatures being checked again, as long as
// the roots are the same pool and every certificate of the chain it
// verified is valid. A direct connection between two agents presents the
// same chain at every TLS handshake (a resumed session too), and the
// signature checks were a tenth of the CPU of a new direct stream.
// Refusals are not remembered. A nil *ChainCache verifies every time.
// Safe for concurrent use.
type ChainCache struct {
	mu      sync.Mutex
	max     int
	entries map[[sha256.Size]byte]cachedChain
}

type cachedChain struct {
	roots   *x509.CertPool
	cluster string
	id      identity.ID
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
	key := chainKey(chain)
	c.mu.Lock()
	e, ok := c.entries[key]
	c.mu.Unlock()
	if ok && e.roots == roots && e.cluster == cluster && e.valid.holds(now) {
		return e.id, nil
	}
	id, w, err := verifyClusterChain(chain, roots, cluster, now)
	if err != nil {
		return id, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for k, e := range c.entries {
			if !e.valid.holds(now) || len(c.entries) >= c.max {
				delete(c.entries, k)
			}
		}
	}
	c.entries[key] = cachedChain{roots: roots, cluster: cluster, id: id, valid: w}
	return id, nil
}

// chainKey hashes the chain's certificates, in order.
func chainKey(chain []*x509.Certificate) [sha256.Size]byte {
	h := sha256.New()
	var n [4]byte
	for _, c := range chain {
		binary.BigEndian.PutUint32(n[:], uint32(len(c.Raw)))
		h.Write(n[:])
		h.Write(c.Raw)
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
