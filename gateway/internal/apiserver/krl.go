package apiserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/sshkrl"
	"github.com/tunnelhq/tunnel/pkg/store"
)

// The KRL endpoint (api.PathKRL) publishes the serials of revoked SSH user
// certificates for hosts running stock sshd with TrustedUserCAKeys. It is
// anonymous, like the CA bundle: a host's cron has no cluster credential,
// and a KRL is public data (random 64-bit serials under the public CA key;
// no key ids, which would name users). Callers without a cluster
// certificate are charged to the anonymous rate limit (limitAnonymous) and
// every caller shares one cached answer, rebuilt at most once per
// krlCacheTTL with one store query.

// krlCacheTTL bounds how long a built KRL is served before the store is
// asked again: a revocation reaches the endpoint within this time.
const krlCacheTTL = 2 * time.Second

// krlRebuild is how long a KRL is kept while the store's revocation stamp
// (store.RevocationStamper) says nothing changed: a safety net, the stamp
// and the expiries tracked here are what move it.
const krlRebuild = 5 * time.Minute

// krlWindow is how far back expired revoked certificates are read, so that
// their expiry (which changes the revoked set) moves the version; older
// changes are below the version's floor (see buildKRL).
const krlWindow = 7 * 24 * time.Hour

// krlMaxWarned bounds the unusable serials remembered as warned about.
const krlMaxWarned = 1000

// krlCache is the last KRL built; its mutex also makes concurrent misses
// wait for one build instead of each querying the store.
//
// Building costs in proportion to the revoked certificates (50,000 take
// seconds), and anonymous callers can ask every krlCacheTTL; so when the
// store offers a cheap store.RevocationStamp, each krlCacheTTL only the
// stamp is read, and the KRL is rebuilt when it changed (a revocation on
// any gateway), when a listed certificate expired, when the version's
// floor moved (daily), or after krlRebuild.
type krlCache struct {
	mu      sync.Mutex
	built   time.Time // when body was built
	checked time.Time // when the store was last asked whether it changed
	body    []byte
	etag    string
	stamp   store.RevocationStamp
	floor   time.Time
	expires time.Time // the first expiry of a listed certificate (zero: none)
	// warned holds the unusable serials already logged.
	warned map[string]bool
}

func (s *Server) routeKRL(mux *http.ServeMux) {
	mux.HandleFunc("GET "+api.PathKRL, s.handleKRL)
}

func (s *Server) handleKRL(w http.ResponseWriter, r *http.Request) {
	body, etag, err := s.cachedKRL(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", api.KRLContentType)
	// Revocations must reach hosts: caches may keep it but must
	// revalidate (the ETag makes that cheap).
	h.Set("Cache-Control", "public, no-cache")
	h.Set("ETag", etag)
	h.Set("Content-Disposition", `attachment; filename="revoked_keys"`)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

func (s *Server) cachedKRL(ctx context.Context) ([]byte, string, error) {
	c := &s.krl
	c.mu.Lock()
	defer c.mu.Unlock()
	now := s.now()
	fresh := func(t time.Time, d time.Duration) bool { return now.Sub(t) < d && !now.Before(t) }
	if c.body != nil && fresh(c.checked, krlCacheTTL) {
		return c.body, c.etag, nil
	}
	floor := krlFloor(now)
	stamper, stamped := s.Store.(store.RevocationStamper)
	var stamp store.RevocationStamp
	if stamped {
		// Read before the set, so that a revocation committed in between
		// changes the next stamp.
		var err error
		if stamp, err = stamper.RevocationStamp(ctx, floor); err != nil {
			return nil, "", err
		}
		if c.body != nil && stamp == c.stamp && floor.Equal(c.floor) && fresh(c.built, krlRebuild) &&
			(c.expires.IsZero() || now.Before(c.expires)) {
			c.checked = now
			return c.body, c.etag, nil
		}
	}
	k, expires, err := s.buildKRL(ctx, now, floor)
	if err != nil {
		return nil, "", err
	}
	body, err := k.Marshal()
	if err != nil {
		return nil, "", fmt.Errorf("encode the KRL: %w", err)
	}
	sum := sha256.Sum256(body)
	c.built, c.checked, c.body, c.etag = now, now, body, `"`+hex.EncodeToString(sum[:16])+`"`
	c.stamp, c.floor, c.expires = stamp, floor, expires
	return c.body, c.etag, nil
}

// krlFloor is the oldest change buildKRL reads at now: the start of the
// UTC day krlWindow before.
func krlFloor(now time.Time) time.Time { return now.Add(-krlWindow).Truncate(24 * time.Hour) }

// warnSerial logs an unusable serial once (per gateway run, for the first
// krlMaxWarned of them). Called with s.krl.mu held.
func (s *Server) warnSerial(serial string) {
	c := &s.krl
	if c.warned[serial] || len(c.warned) >= krlMaxWarned {
		return
	}
	if c.warned == nil {
		c.warned = map[string]bool{}
	}
	c.warned[serial] = true
	s.log().Warn("KRL: skipping a revoked SSH certificate with an unusable serial (logged once)", "serial", serial)
}

// buildKRL returns the KRL of the SSH user certificates revoked and not
// expired at now, one section per trusted user CA (during a CA rotation a
// serial is listed under each: serials are random 64-bit numbers, so it
// revokes nothing else).
//
// Its version is the time of the last change to that set, in Unix
// milliseconds: the latest revocation or expiry of a revoked certificate,
// and at least the start of the UTC day krlWindow before now (changes
// older than that are not read). So it never decreases, increases when
// the set changes, and is the same on every gateway of the store. The
// generated date is that time in seconds, so the same set gives the same
// bytes and ETag.
//
// expires is the first expiry of a listed certificate (zero if none): the
// set changes then.
func (s *Server) buildKRL(ctx context.Context, now, floor time.Time) (k *sshkrl.KRL, expires time.Time, err error) {
	revoked, err := s.Store.RevokedCertificates(ctx, floor)
	if err != nil {
		return nil, time.Time{}, err
	}
	last := floor
	var serials []sshkrl.Range
	for _, c := range revoked {
		if c.Kind != store.CertSSHUser {
			continue
		}
		if c.RevokedAt.After(last) {
			last = c.RevokedAt
		}
		if !c.NotAfter.After(now) {
			if c.NotAfter.After(last) {
				last = c.NotAfter
			}
			continue
		}
		serial, err := strconv.ParseUint(c.Serial, 16, 64)
		if err != nil || serial == 0 {
			// Never issued by this CA (its serials are random and
			// non-zero); nothing a KRL can name.
			s.warnSerial(c.Serial)
			continue
		}
		if expires.IsZero() || c.NotAfter.Before(expires) {
			expires = c.NotAfter
		}
		serials = append(serials, sshkrl.Range{Lo: serial, Hi: serial})
	}
	k = &sshkrl.KRL{Version: uint64(last.UnixMilli()), GeneratedDate: uint64(last.Unix()),
		Comment: "revoked SSH user certificates of tunnel cluster " + s.CA.Cluster()}
	for _, ca := range s.CA.SSHUserCAs() {
		k.Sections = append(k.Sections, sshkrl.CertSection{CA: ca, Serials: serials})
	}
	return k, expires, nil
}
