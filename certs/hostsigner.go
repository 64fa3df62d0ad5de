package certs

import (
	"crypto"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// HostSigner is an SSH host key whose certificate, signed by the active
// host CA, stays current by itself: it is issued again when the CA keys
// change (a rotation step, Reload) and once two thirds of its life have
// passed. A long-running SSH server (the gateway's jump host) gives it as
// its host key; every handshake presents the current certificate. The
// private key never changes. Safe for concurrent use.
type HostSigner struct {
	a          *Authority
	host       string
	principals []string
	key        ssh.Signer

	mu     sync.Mutex
	cur    ssh.Signer // the key with its certificate
	cert   *ssh.Certificate
	gen    uint64
	issued bool
}

// NewHostSigner returns a HostSigner for key (Ed25519 or ECDSA P-256),
// certified for host and principals as IssueSSHHost does.
func (a *Authority) NewHostSigner(host string, principals []string, key crypto.Signer) (*HostSigner, error) {
	s, err := ssh.NewSignerFromSigner(key)
	if err != nil {
		return nil, fmt.Errorf("host signer: %w", err)
	}
	h := &HostSigner{a: a, host: host, principals: slices.Clone(principals), key: s}
	if _, err := h.current(); err != nil {
		return nil, err
	}
	return h, nil
}

// current returns the key with a current certificate, issuing one if
// needed; if that fails, the previous one while it is valid.
func (h *HostSigner) current() (ssh.Signer, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	gen, now := h.a.Generation(), h.a.now()
	if h.issued && gen == h.gen && !hostCertDue(h.cert, now) {
		return h.cur, nil
	}
	cert, err := h.a.IssueSSHHost(SSHHostRequest{Host: h.host, Principals: h.principals, PublicKey: h.key.PublicKey()})
	if err == nil {
		var cs ssh.Signer
		if cs, err = ssh.NewCertSigner(cert, h.key); err == nil {
			h.cur, h.cert, h.gen, h.issued = cs, cert, gen, true
			return cs, nil
		}
	}
	if h.issued && now.Before(time.Unix(int64(h.cert.ValidBefore), 0)) {
		return h.cur, nil
	}
	return nil, fmt.Errorf("host certificate for %s: %w", h.host, err)
}

// hostCertDue reports whether two thirds of c's life have passed at now.
func hostCertDue(c *ssh.Certificate, now time.Time) bool {
	after, before := time.Unix(int64(c.ValidAfter), 0), time.Unix(int64(c.ValidBefore), 0)
	return now.After(after.Add(before.Sub(after) * 2 / 3))
}

// Certificate returns the certificate presented now.
func (h *HostSigner) Certificate() *ssh.Certificate {
	if _, err := h.current(); err != nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cert
}

// PublicKey implements ssh.Signer: the current certificate.
func (h *HostSigner) PublicKey() ssh.PublicKey {
	s, err := h.current()
	if err != nil {
		return h.key.PublicKey() // plain key: the client refuses it with its own message
	}
	return s.PublicKey()
}

// Sign implements ssh.Signer with the (unchanging) host key.
func (h *HostSigner) Sign(rand io.Reader, data []byte) (*ssh.Signature, error) {
	return h.key.Sign(rand, data)
}

// SignWithAlgorithm implements ssh.AlgorithmSigner.
func (h *HostSigner) SignWithAlgorithm(rand io.Reader, data []byte, algorithm string) (*ssh.Signature, error) {
	as, ok := h.key.(ssh.AlgorithmSigner)
	if !ok {
		return nil, errors.New("host key cannot sign with a chosen algorithm")
	}
	return as.SignWithAlgorithm(rand, data, underlyingAlgo(algorithm))
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
