package trust_test

import (
	"crypto/x509"
	"encoding/pem"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/trust"
)

func pemOf(cs ...*x509.Certificate) string {
	var s string
	for _, c := range cs {
		s += string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	}
	return s
}

// TestFollowPin: a pin of a cluster CA moves to the signing CA of a bundle
// at each rotation's activate, also for a peer that missed the steps until
// finish; a pin of another CA (an operator's) never moves; a bundle whose
// signing pin is not one of its CAs moves nothing.
func TestFollowPin(t *testing.T) {
	ca0 := sign(t, caPathLenZero("prod tunnel CA"), newKey(t), nil, nil)
	ca1 := sign(t, caPathLenZero("prod tunnel CA"), newKey(t), nil, nil)
	ca2 := sign(t, caPathLenZero("prod tunnel CA"), newKey(t), nil, nil)
	operator := sign(t, caPathLenZero("operator CA"), newKey(t), nil, nil)
	p0, p1, p2, po := trust.Pin(ca0), trust.Pin(ca1), trust.Pin(ca2), trust.Pin(operator)
	for _, tt := range []struct {
		name                   string
		current, trusted, x509 string
		signing, want          string
	}{
		{"started: the old CA still signs", p0, pemOf(ca0), pemOf(ca0, ca1), p0, p0},
		{"activated: the new CA signs", p0, pemOf(ca0, ca1), pemOf(ca1, ca0), p1, p1},
		{"finished, steps missed: the old CA only in what the peer trusted", p0, pemOf(ca0), pemOf(ca1), p1, p1},
		{"the next rotation", p1, pemOf(ca1), pemOf(ca2, ca1), p2, p2},
		{"a pin of an operator's CA", po, pemOf(ca0), pemOf(ca1, ca0), p1, po},
		{"a pin of a CA neither trusted nor in the bundle", p0, pemOf(ca1), pemOf(ca2), p2, p0},
		{"a signing pin that is not in the bundle", p0, pemOf(ca0), pemOf(ca0, ca1), p2, p0},
		{"no signing pin", p0, pemOf(ca0), pemOf(ca0, ca1), "", p0},
		{"not a pin", "sha256:xyz", pemOf(ca0), pemOf(ca1, ca0), p1, "sha256:xyz"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, changed := trust.FollowPin(tt.current, tt.trusted, tt.x509, tt.signing)
			if got != tt.want || changed != (tt.want != tt.current) {
				t.Fatalf("FollowPin = %s, %t; want %s", got, changed, tt.want)
			}
		})
	}
}
