package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
)

// apiBudget bounds the whole API check, in probe timeouts.
const apiBudget = 6

// tlsVersions are probed one at a time, newest first.
var tlsVersions = []struct {
	v    uint16
	name string
}{
	{tls.VersionTLS13, "1.3"},
	{tls.VersionTLS12, "1.2"},
	{tls.VersionTLS11, "1.1"},
	{tls.VersionTLS10, "1.0"},
}

// unreachableError marks a probe that never reached TLS (TCP refused or
// timed out), as opposed to a handshake the server refused.
type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }

// handshake makes one TLS handshake with exactly one version and, when
// suites is not nil, exactly those cipher suites (TLS 1.2 and below). It
// verifies nothing: the certificate is graded separately.
func (r *runner) handshake(ctx context.Context, version uint16, suites []uint16) (tls.ConnectionState, error) {
	conf := &tls.Config{
		MinVersion: version, MaxVersion: version, CipherSuites: suites,
		ServerName: r.cfg.ServerName,
		// Probing what the server offers, not trusting it: the chain is
		// graded by CertFindings against the cluster CA.
		InsecureSkipVerify: true, //nolint:gosec // graded separately
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", r.cfg.API)
	if err != nil {
		return tls.ConnectionState{}, &unreachableError{err}
	}
	defer raw.Close()
	c := tls.Client(raw, conf)
	if err := c.HandshakeContext(ctx); err != nil {
		return tls.ConnectionState{}, err
	}
	return c.ConnectionState(), nil
}

// suitesFor lists every cipher suite Go can speak at version v (secure and
// insecure), below TLS 1.3 (whose suites are not configurable).
func suitesFor(v uint16) []*tls.CipherSuite {
	var out []*tls.CipherSuite
	for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		for _, sv := range s.SupportedVersions {
			if sv == v {
				out = append(out, s)
				break
			}
		}
	}
	return out
}

// checkAPI probes the API's TLS versions and, below TLS 1.3, its cipher
// suites, then grades the certificate of the newest handshake.
func (r *runner) checkAPI(ctx context.Context) []Finding {
	const check = "api"
	// Each handshake has its own deadline; the whole check has one too,
	// for a server that stalls every probe instead of refusing it.
	budget := apiBudget * r.cfg.Timeout
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	var out []Finding
	var chain []*x509.Certificate
	accepted := map[string]bool{}
	suites := map[string][]string{} // suite name -> versions
	var order []string
	for _, tv := range tlsVersions {
		if ctx.Err() != nil {
			break
		}
		st, err := r.handshake(ctx, tv.v, nil)
		if ue := (*unreachableError)(nil); errors.As(err, &ue) && ctx.Err() == nil {
			return []Finding{fail(check, "api.reachable", F, fmt.Sprintf("cannot reach the API at %s: %v", r.cfg.API, ue.err),
				"check the gateway is running and --gateway names its API address (HOST:PORT)")}
		}
		if err != nil {
			continue
		}
		accepted[tv.name] = true
		if chain == nil {
			chain = st.PeerCertificates
		}
		if tv.v == tls.VersionTLS13 {
			continue
		}
		for _, s := range suitesFor(tv.v) {
			if ctx.Err() != nil {
				break
			}
			if _, err := r.handshake(ctx, tv.v, []uint16{s.ID}); err == nil {
				if _, seen := suites[s.Name]; !seen {
					order = append(order, s.Name)
				}
				suites[s.Name] = append(suites[s.Name], tv.name)
			}
		}
	}
	if len(accepted) == 0 {
		return []Finding{fail(check, "api.tls", F, fmt.Sprintf("%s completes no TLS handshake (1.0 to 1.3) within %s each", r.cfg.API, r.cfg.Timeout),
			"check --gateway names the gateway's API port, not another service, and that the gateway is not overloaded")}
	}
	if ctx.Err() != nil {
		out = append(out, warn(check, "api.slow", B, fmt.Sprintf("the API answered the probes too slowly: they were cut off after %s, so the results below may be incomplete", budget),
			"check the gateway's load and the network; run tunnel doctor again"))
	}
	out = append(out, versionFindings(accepted)...)
	for _, name := range order {
		out = append(out, suiteFinding(name, suites[name]))
	}
	out = append(out, CertFindings(chain, r.roots, r.cfg.ServerName, r.now())...)
	return out
}

func versionFindings(accepted map[string]bool) []Finding {
	const check = "api"
	var out []Finding
	if accepted["1.3"] {
		out = append(out, ok(check, "tls.version.1.3", "TLS 1.3 is offered"))
	} else {
		out = append(out, warn(check, "tls.version.1.3", B, "TLS 1.3 is not offered", "the tunnel gateway speaks only TLS 1.3: check a proxy in front of it is not terminating TLS"))
	}
	if accepted["1.2"] {
		out = append(out, warn(check, "tls.version.1.2", B, "TLS 1.2 is offered (only a TLS 1.3-only endpoint gets an A)",
			"serve TLS 1.3 only (MinVersion TLS 1.3); a proxy in front of the gateway must not accept older versions"))
	}
	for _, v := range []string{"1.1", "1.0"} {
		if accepted[v] {
			out = append(out, fail(check, "tls.version."+v, C, "TLS "+v+" is offered; it is deprecated (RFC 8996)",
				"disable TLS 1.0 and 1.1 wherever TLS is terminated"))
		}
	}
	if len(out) == 1 && accepted["1.3"] {
		out[0].What = "only TLS 1.3 is offered"
	}
	return out
}

// suiteFinding grades one cipher suite accepted below TLS 1.3.
func suiteFinding(name string, versions []string) Finding {
	const check = "api"
	id := "tls.suite." + name
	on := " (TLS " + strings.Join(versions, ", ") + ")"
	fix := "accept only ECDHE suites with AES-GCM or ChaCha20-Poly1305, or better, TLS 1.3 only"
	switch {
	case strings.Contains(name, "RC4"):
		return fail(check, id, F, "cipher suite "+name+" is accepted"+on+": RC4 is broken", fix)
	case strings.Contains(name, "3DES"):
		return fail(check, id, C, "cipher suite "+name+" is accepted"+on+": 3DES has 64-bit blocks (Sweet32)", fix)
	case strings.HasPrefix(name, "TLS_RSA_"):
		return fail(check, id, C, "cipher suite "+name+" is accepted"+on+": RSA key exchange has no forward secrecy", fix)
	case strings.Contains(name, "_CBC_"):
		return fail(check, id, C, "cipher suite "+name+" is accepted"+on+": CBC mode (padding oracles, Lucky13)", fix)
	}
	return info(check, id, "cipher suite "+name+" is accepted"+on)
}
