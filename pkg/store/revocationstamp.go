package store

import (
	"context"
	"time"
)

// RevocationStamper is implemented by stores that can tell cheaply
// whether the revoked certificates changed, so that what is derived from
// them (the KRL, apiserver/krl.go) is rebuilt only then. It is optional:
// a caller falls back to reading RevokedCertificates.
type RevocationStamper interface {
	// RevocationStamp sums up the certificates revoked and expiring after
	// since, in one cheap query: it changes whenever one is revoked (or
	// its record removed). Two equal stamps mean the same revoked set,
	// apart from expiries, which the caller tracks itself.
	RevocationStamp(ctx context.Context, since time.Time) (RevocationStamp, error)
}

// RevocationStamp is how many certificates are revoked and the latest
// revocation time, in Unix microseconds (0 if none). Comparable with ==.
type RevocationStamp struct {
	Count       int64
	LastRevoked int64
}
