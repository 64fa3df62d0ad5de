package wire

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// The trust bundle over live connections (docs/CA-ROTATION.md). When a
// gateway reloads its CA keys (a rotation step, made on any gateway of the
// cluster), it sends every agent connected to it the bundle it now hands
// out at enrolment and renewal: a MsgTrust on the agent's control stream,
// with the bundle in Control.Trust. The agent checks it (Check, then its
// own certificate and the gateway's must still be anchored in it), saves
// it with its identity and applies it at once, instead of waiting for its
// next renewal.

// MsgTrust carries the cluster's trust bundle (Control.Trust) from a
// gateway to an agent.
const MsgTrust = "trust"

// MsgTrusted, from an agent, says the epoch of the trust bundle it holds
// now (Control.Epoch), after a MsgTrust (taken, unchanged or ignored as
// older); its hello says it too. A gateway counts the agents that hold
// the current bundle (tunnel admin ca rotate status).
const MsgTrusted = "trusted"

// Trust is the cluster's trust bundle, as the enrolment and renewal
// answers and the API's CA endpoint carry it (api.CA is this type): what
// an agent verifies other agents (X509), SSH users (SSHUserCAs) and the
// cluster's hosts (SSHHostCAs) with.
type Trust struct {
	Cluster string `json:"cluster"`
	// X509 holds the PEM certificates of the trusted X.509 CAs, the
	// active one first.
	X509 string `json:"x509_pem"`
	// SSHUserCAs and SSHHostCAs are authorized_keys lines, the active
	// key first.
	SSHUserCAs []string `json:"ssh_user_cas"`
	SSHHostCAs []string `json:"ssh_host_cas"`
	// Pin is the pin of the active X.509 CA (sha256:HEX), for logs: an
	// agent keeps the pin it enrolled with.
	Pin string `json:"pin,omitempty"`
	// Epoch versions the bundle (api.CA's Epoch): an agent ignores a
	// bundle older than the one it holds.
	Epoch uint64 `json:"epoch,omitempty"`
}

// Limits of a trust bundle: a rotation trusts two keys of each kind; the
// bounds leave room and keep a bundle well inside MaxControlSize.
const (
	// MaxTrustCAs bounds the keys of one kind.
	MaxTrustCAs = 8
	// MaxTrustX509 bounds the PEM text of the X.509 CAs, in bytes.
	MaxTrustX509 = 32 << 10
	// MaxTrustKeyLine bounds one SSH CA's authorized_keys line, in bytes.
	MaxTrustKeyLine = 1024
	// maxTrustName bounds the cluster name and the pin.
	maxTrustName = 255
)

// Check checks the shape of a bundle: every part present, within the
// limits, UTF-8, one key per SSH line. It does not parse the
// certificates and keys: the receiver does, and decides whether to trust
// them.
func (t *Trust) Check() error {
	switch {
	case t == nil:
		return errors.New("trust bundle: missing")
	case t.Cluster == "" || len(t.Cluster) > maxTrustName || !utf8.ValidString(t.Cluster):
		return fmt.Errorf("trust bundle: the cluster name must be UTF-8 of 1 to %d bytes", maxTrustName)
	case len(t.Pin) > maxTrustName || !utf8.ValidString(t.Pin):
		return fmt.Errorf("trust bundle: the pin must be UTF-8 of at most %d bytes", maxTrustName)
	case !strings.Contains(t.X509, "-----BEGIN CERTIFICATE-----"):
		return errors.New("trust bundle: no X.509 CA certificate")
	case len(t.X509) > MaxTrustX509 || !utf8.ValidString(t.X509):
		return fmt.Errorf("trust bundle: the X.509 CAs must be PEM text of at most %d bytes", MaxTrustX509)
	case strings.Count(t.X509, "-----BEGIN ") > MaxTrustCAs:
		return fmt.Errorf("trust bundle: more than %d X.509 CA certificates", MaxTrustCAs)
	}
	for _, kind := range []struct {
		name  string
		lines []string
	}{{"SSH user", t.SSHUserCAs}, {"SSH host", t.SSHHostCAs}} {
		if len(kind.lines) == 0 || len(kind.lines) > MaxTrustCAs {
			return fmt.Errorf("trust bundle: %d %s CAs; want 1 to %d", len(kind.lines), kind.name, MaxTrustCAs)
		}
		for _, l := range kind.lines {
			if l == "" || len(l) > MaxTrustKeyLine || !utf8.ValidString(l) || strings.ContainsAny(l, "\r\n") {
				return fmt.Errorf("trust bundle: an %s CA must be one authorized_keys line of at most %d bytes", kind.name, MaxTrustKeyLine)
			}
		}
	}
	return nil
}
