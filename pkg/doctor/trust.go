package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

// Clock skew thresholds against the gateway.
const (
	SkewWarn = 30 * time.Second
	SkewFail = 2 * time.Minute
)

// maxBody bounds what the doctor reads of an HTTP answer.
const maxBody = 1 << 20

// ParseCAs reads PEM certificates (a CA bundle).
func ParseCAs(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse CA certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no PEM certificate found")
	}
	return out, nil
}

// checkTrust settles which CA the API check verifies against, and reads the
// gateway's clock from the same answer (GET /v1/ca, which is public).
func (r *runner) checkTrust(ctx context.Context) []Finding {
	const check = "trust"
	ca, date, sent, got, err := r.fetchCA(ctx)
	if err == nil {
		r.clock = []Finding{skewFinding(date, sent, got)}
	} else {
		r.clock = []Finding{local(info("clock", "clock.skew", fmt.Sprintf("could not read the gateway's clock: %v", err)))}
	}
	if len(r.cfg.CA) > 0 {
		r.use(r.cfg.CA)
		src := r.cfg.TrustSource
		if src == "" {
			src = "the given CA"
		}
		return []Finding{local(ok(check, "trust.ca", fmt.Sprintf("verifying against the cluster CA from %s (%s)", src, r.pin)))}
	}
	if err != nil {
		return []Finding{local(warn(check, "trust.ca", "", fmt.Sprintf("no cluster CA to verify against: fetching it from the gateway failed: %v", err),
			"log in first (the profile keeps the CA), or pass --ca FILE"))}
	}
	if r.cfg.Pin != "" {
		for _, c := range ca {
			if trust.MatchPin(c, r.cfg.Pin) {
				r.use([]*x509.Certificate{c})
				return []Finding{local(ok(check, "trust.ca", "the CA fetched from the gateway matches --ca-pin "+r.cfg.Pin))}
			}
		}
		return []Finding{fail(check, "trust.ca", F, "the CA the gateway sends does not match --ca-pin "+r.cfg.Pin,
			"you may not be talking to your gateway: check the address and the pin tunnel-gateway init printed")}
	}
	r.use(ca)
	return []Finding{local(warn(check, "trust.ca", "", fmt.Sprintf("no cluster CA was given: trusting the one the gateway itself sent (%s), so the chain check shows only that the gateway is consistent", r.pin),
		"compare that pin with the one tunnel-gateway init printed, then pass --ca-pin "+r.pin+" (or log in, or pass --ca FILE)"))}
}

func (r *runner) use(ca []*x509.Certificate) {
	r.roots = x509.NewCertPool()
	for _, c := range ca {
		r.roots.AddCert(c)
	}
	r.pin = trust.Pin(ca[0])
}

// fetchCA asks GET /v1/ca without trusting the answer yet (it is checked
// against the pin, or reported as unverified), and returns the CA with the
// answer's Date header and when the request was sent and answered.
func (r *runner) fetchCA(ctx context.Context) (ca []*x509.Certificate, date, sent, got time.Time, err error) {
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{ServerName: r.cfg.ServerName, MinVersion: tls.VersionTLS12,
			InsecureSkipVerify: true}, //nolint:gosec // the CA is checked against the pin or reported as unverified
		TLSHandshakeTimeout: r.cfg.Timeout, ResponseHeaderTimeout: r.cfg.Timeout, DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	u := url.URL{Scheme: "https", Host: r.cfg.API, Path: api.PathCA}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, date, sent, got, err
	}
	sent = r.now()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return nil, date, sent, got, err
	}
	defer resp.Body.Close()
	got = r.now()
	date, err = http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return nil, date, sent, got, fmt.Errorf("the answer has no valid Date header")
	}
	if resp.StatusCode != http.StatusOK {
		return nil, date, sent, got, fmt.Errorf("GET %s: HTTP %d", api.PathCA, resp.StatusCode)
	}
	var body api.CA
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&body); err != nil {
		return nil, date, sent, got, fmt.Errorf("GET %s: %w", api.PathCA, err)
	}
	ca, err = ParseCAs([]byte(body.X509))
	return ca, date, sent, got, err
}

// skewFinding compares the gateway's Date (whole seconds, rounded down)
// with the middle of the request on this machine's clock.
func skewFinding(date, sent, got time.Time) Finding {
	const check, id = "clock", "clock.skew"
	mid := sent.Add(got.Sub(sent) / 2)
	skew := date.Add(500 * time.Millisecond).Sub(mid)
	abs := skew.Abs()
	dir := "ahead of"
	if skew < 0 {
		dir = "behind"
	}
	what := fmt.Sprintf("the gateway's clock is %s %s this machine's", abs.Round(time.Second), dir)
	fix := "run NTP (chrony, systemd-timesyncd) on the gateway and on this machine: certificates and TOTP codes depend on the clocks"
	switch {
	case abs > SkewFail:
		return fail(check, id, C, what, fix)
	case abs > SkewWarn:
		return warn(check, id, B, what, fix)
	}
	return ok(check, id, fmt.Sprintf("the clocks agree within %s", SkewWarn))
}

func (r *runner) clockFindings() []Finding { return r.clock }
