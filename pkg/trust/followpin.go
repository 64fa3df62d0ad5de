package trust

import (
	"crypto/x509"
	"encoding/pem"
	"strings"
)

// FollowPin says which pin a peer that pinned current should keep after a
// gateway it authenticated with that pin gave it a trust bundle: the PEM
// CA certificates bundleX509 (the cluster's trusted X.509 CAs) and the
// pin of the one that signs, bundlePin. A CA rotation (docs/CA-ROTATION.md)
// makes a new CA sign from its activate step; a peer that keeps the old
// pin still authenticates the gateway through the cross-signature, but
// only for one rotation: after the next one the old CA is in no chain the
// gateway sends. So the pin moves to the signing CA when current names a
// cluster CA, one of bundleX509 or of trusted (the CAs the peer trusted
// until now, which still hold a CA the bundle dropped at finish), and
// bundlePin names one of bundleX509. A pin of anything else (an operator's
// CA behind --tls-cert) stays. It returns the pin to keep and whether it
// changed. The pins compared are canonical (ParsePin).
func FollowPin(current, trusted, bundleX509, bundlePin string) (string, bool) {
	cur, err := ParsePin(current)
	if err != nil {
		return current, false
	}
	next, err := ParsePin(bundlePin)
	if err != nil || next == cur {
		return current, false
	}
	bundle := pinsOf(bundleX509)
	if !bundle[next] || !bundle[cur] && !pinsOf(trusted)[cur] {
		return current, false
	}
	return next, true
}

// pinsOf returns the pins of the CA certificates in PEM text (what does
// not parse is skipped).
func pinsOf(pemText string) map[string]bool {
	out := map[string]bool{}
	rest := []byte(strings.TrimSpace(pemText))
	for {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return out
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(blk.Bytes); err == nil && c.IsCA {
			out[Pin(c)] = true
		}
	}
}
