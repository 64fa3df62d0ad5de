package certs

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// CertSigner is an SSH host key presented with a certificate that may
// change while the server runs: every handshake presents the certificate
// Cert returns then, and signs with Key, which never changes, so that the
// signature matches whichever certificate the handshake presented. A
// long-running SSH server gives it as its host key (an ssh.Signer) and
// serves a renewed certificate, or one of a new host CA, without a
// restart: the gateway's jump host (HostSigner, the certificate issued by
// the CA) and the agents' SSH endpoints (the certificate their last
// renewal saved). Safe for concurrent use if Cert is.
type CertSigner struct {
	// Key is the host's private key.
	Key ssh.Signer
	// Cert returns the certificate to present now. Nil, or a certificate
	// of another key, presents the plain key (clients that want a
	// certificate refuse it with their own message).
	Cert func() *ssh.Certificate
}

// PublicKey implements ssh.Signer: the current certificate.
func (s *CertSigner) PublicKey() ssh.PublicKey {
	if s.Cert != nil {
		if c := s.Cert(); c != nil && bytes.Equal(c.Key.Marshal(), s.Key.PublicKey().Marshal()) {
			return c
		}
	}
	return s.Key.PublicKey()
}

// Sign implements ssh.Signer with the (unchanging) host key.
func (s *CertSigner) Sign(rand io.Reader, data []byte) (*ssh.Signature, error) {
	return s.Key.Sign(rand, data)
}

// SignWithAlgorithm implements ssh.AlgorithmSigner.
func (s *CertSigner) SignWithAlgorithm(rand io.Reader, data []byte, algorithm string) (*ssh.Signature, error) {
	as, ok := s.Key.(ssh.AlgorithmSigner)
	if !ok {
		return nil, errors.New("host key cannot sign with a chosen algorithm")
	}
	return as.SignWithAlgorithm(rand, data, underlyingAlgo(algorithm))
}

// HostSigner is an SSH host key whose certificate, signed by the active
// host CA, stays current by itself: it is issued again when the CA keys
// change (a rotation step, Reload) and once two thirds of its life have
// passed. A long-running SSH server (the gateway's jump host) gives it as
// its host key; every handshake presents the current certificate (a
// CertSigner). The private key never changes. Safe for concurrent use.
//
// One caller issues at a time, outside the lock: the others present the
// certificate in use meanwhile while it is valid, so that a slow signer
// (a Transit key in Vault) never holds up handshakes; after a failure the
// next attempt waits hostRetry.
type HostSigner struct {
	a          *Authority
	host       string
	principals []string
	signer     CertSigner

	mu      sync.Mutex
	cert    *ssh.Certificate
	gen     uint64
	issued  bool
	issuing chan struct{} // closed when the issuance under way ends; nil if none
	retryAt time.Time     // no new attempt before, after a failure
	lastErr error         // that failure
}

// hostRetry is how long a HostSigner waits after a failed issuance before
// it tries again (it presents the previous certificate meanwhile).
const hostRetry = 10 * time.Second

// NewHostSigner returns a HostSigner for key (Ed25519 or ECDSA P-256),
// certified for host and principals as IssueSSHHost does.
func (a *Authority) NewHostSigner(host string, principals []string, key crypto.Signer) (*HostSigner, error) {
	s, err := ssh.NewSignerFromSigner(key)
	if err != nil {
		return nil, fmt.Errorf("host signer: %w", err)
	}
	h := &HostSigner{a: a, host: host, principals: slices.Clone(principals)}
	h.signer = CertSigner{Key: s, Cert: h.Certificate}
	if _, err := h.current(); err != nil {
		return nil, err
	}
	return h, nil
}

// current returns a current certificate, issuing one if needed; while
// another caller issues, or for hostRetry after a failure, the previous
// one while it is valid, or the failure if there is none.
func (h *HostSigner) current() (*ssh.Certificate, error) {
	for {
		h.mu.Lock()
		gen, now := h.a.Generation(), h.a.now()
		valid := h.issued && now.Before(time.Unix(int64(h.cert.ValidBefore), 0))
		switch {
		case h.issued && gen == h.gen && !hostCertDue(h.cert, now),
			valid && (h.issuing != nil || now.Before(h.retryAt)):
			c := h.cert
			h.mu.Unlock()
			return c, nil
		case h.issuing == nil && now.Before(h.retryAt):
			err := h.lastErr
			h.mu.Unlock()
			return nil, err
		case h.issuing != nil:
			// No valid certificate to present meanwhile: wait for the
			// issuance under way, then look again (a failure sets retryAt,
			// so its waiters get the error instead of issuing in turn).
			wait := h.issuing
			h.mu.Unlock()
			<-wait
			continue
		}
		h.issuing = make(chan struct{})
		h.mu.Unlock()
		if c, err := h.issue(gen); err != nil || c != nil {
			return c, err
		}
	}
}

// issue issues a certificate for the keys of generation gen (the caller
// set h.issuing) and records the outcome: the new certificate, or, after
// a failure, the previous one while it is valid (nil, nil if there is
// none: the caller's loop then returns the failure).
func (h *HostSigner) issue(gen uint64) (cert *ssh.Certificate, err error) {
	defer func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		close(h.issuing)
		h.issuing = nil
		if err == nil && cert != nil {
			h.cert, h.gen, h.issued, h.retryAt = cert, gen, true, time.Time{}
			return
		}
		if err == nil {
			err = errors.New("internal error")
		}
		h.lastErr = fmt.Errorf("host certificate for %s: %w", h.host, err)
		h.retryAt = h.a.now().Add(hostRetry)
		cert, err = nil, h.lastErr
		if h.issued && h.a.now().Before(time.Unix(int64(h.cert.ValidBefore), 0)) {
			cert, err = h.cert, nil
		}
	}()
	return h.a.IssueSSHHost(SSHHostRequest{Host: h.host, Principals: h.principals, PublicKey: h.signer.Key.PublicKey()})
}

// hostCertDue reports whether two thirds of c's life have passed at now.
func hostCertDue(c *ssh.Certificate, now time.Time) bool {
	after, before := time.Unix(int64(c.ValidAfter), 0), time.Unix(int64(c.ValidBefore), 0)
	return now.After(after.Add(before.Sub(after) * 2 / 3))
}

// Certificate returns the certificate presented now (nil if none can be
// issued and the last one expired).
func (h *HostSigner) Certificate() *ssh.Certificate {
	c, err := h.current()
	if err != nil {
		return nil
	}
	return c
}

// PublicKey implements ssh.Signer: the current certificate.
func (h *HostSigner) PublicKey() ssh.PublicKey { return h.signer.PublicKey() }

// Sign implements ssh.Signer with the (unchanging) host key.
func (h *HostSigner) Sign(rand io.Reader, data []byte) (*ssh.Signature, error) {
	return h.signer.Sign(rand, data)
}

// SignWithAlgorithm implements ssh.AlgorithmSigner.
func (h *HostSigner) SignWithAlgorithm(rand io.Reader, data []byte, algorithm string) (*ssh.Signature, error) {
	return h.signer.SignWithAlgorithm(rand, data, algorithm)
}

// underlyingAlgo maps a certificate signature algorithm to its key's.
func underlyingAlgo(algo string) string {
	switch algo {
	case ssh.CertAlgoED25519v01:
		return ssh.KeyAlgoED25519
	case ssh.CertAlgoECDSA256v01:
		return ssh.KeyAlgoECDSA256
	}
	return algo
}
