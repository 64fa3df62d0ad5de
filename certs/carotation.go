package certs

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/seal"
	"github.com/tunnelhq/tunnel/pkg/store"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

// CA rotation (docs/CA-ROTATION.md). The store keeps every key of a kind:
// the active one signs, the inactive ones are trusted. A rotation adds a
// new key inactive (NewCAKey), makes it active, then removes the old one;
// after each step every gateway calls Reload, and what it verifies and
// signs follows at once.
//
// A new X.509 CA key is stored with three certificates (DER, one after
// the other): its self-signed CA certificate, the same CA certificate
// signed by the active CA it replaces (a cross-signature), and that CA's
// own certificate. A gateway serving a certificate of the new CA sends the
// cross-signature and the old CA along (ServerChain), so that agents and
// clients that pin the old CA (their --ca-pin) keep authenticating the
// gateway, during the rotation and after it, until they are given the new
// pin. This is only the gateway's authentication to those who pinned the
// old key: what the old CA signed (client, agent, SSH certificates) is
// refused once it is removed.

// Reload replaces the Authority's keys by keys (the store's CAKeys), as
// Load would make them, opening the active keys again, under the epoch in
// use. On error the keys in use are kept. An Authority made by Generate
// cannot reload.
func (a *Authority) Reload(keys []store.CAKey) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	return a.reloadLocked(keys, a.ks().epoch)
}

// Refresh reads the keys and their CA epoch with fetch (store.ReadCAKeys)
// and reloads them if they differ from those in use, reporting whether it
// did (or took a newer epoch for the same keys: a new generation too).
// Calls are serialised from the read to the switch, so that a slow one
// never puts back keys older than a faster one read; an epoch lower than
// the one in use is not taken either.
func (a *Authority) Refresh(fetch func() ([]store.CAKey, uint64, error)) (bool, error) {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	keys, epoch, err := fetch()
	if err != nil {
		return false, fmt.Errorf("reload CA: reading the keys: %w", err)
	}
	cur := a.ks()
	if epoch < cur.epoch {
		return false, nil
	}
	if keysDigest(keys) == cur.digest {
		if epoch == cur.epoch {
			return false, nil
		}
		// The same keys under a newer epoch (a step that changed nothing,
		// such as activating the active key again, or keys read earlier
		// under a label older than they were): a new generation, so that
		// the bundle goes out again with its true label.
		next := *cur
		next.epoch, next.gen = epoch, cur.gen+1
		a.keys.Store(&next)
		return true, nil
	}
	return true, a.reloadLocked(keys, epoch)
}

func (a *Authority) reloadLocked(keys []store.CAKey, epoch uint64) error {
	if a.open == nil {
		return errors.New("reload CA: this authority was not loaded from a store")
	}
	ks, err := buildKeyset(keys, a.open)
	if err != nil {
		return fmt.Errorf("reload CA: %w", err)
	}
	ks.gen, ks.epoch = a.ks().gen+1, epoch
	a.keys.Store(ks)
	return nil
}

// Epoch returns the store's CA epoch of the keys in use
// (store.CAEpochMeta): it versions the trust bundle, so that an agent can
// tell an older bundle from a newer one.
func (a *Authority) Epoch() uint64 { return a.ks().epoch }

// keysDigest identifies a set of keys: kinds, public parts, which are
// active.
func keysDigest(keys []store.CAKey) [sha256.Size]byte {
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s %t %d ", k.Kind, k.Active, len(k.Public))
		h.Write(k.Public)
	}
	return [sha256.Size]byte(h.Sum(nil))
}

// Generation counts the reloads: what was made with the keys of one
// generation (a served certificate chain) is made again when it changes.
func (a *Authority) Generation() uint64 { return a.ks().gen }

// NewCAKey makes a new key of kind for a rotation, inactive and created
// now: key when given (a key held elsewhere, such as a Vault Transit key,
// kept by reference), else a new local key sealed with s: ECDSA P-256 for
// the X.509 CA (so that rotating the X.509 CA of a cluster made with an
// Ed25519 one gives it a CA whose certificates browsers accept), Ed25519
// for an SSH CA. For X.509 the stored public part is the new CA
// certificate followed by its cross-signature by the active CA, whatever
// the types of the two keys.
func (a *Authority) NewCAKey(kind store.CertKind, s seal.Sealer, key crypto.Signer) (store.CAKey, error) {
	if key == nil {
		if s == nil {
			return store.CAKey{}, errors.New("new CA key: no sealer to seal it with")
		}
		var err error
		switch kind {
		case store.CertX509:
			key, err = a.newX509CAKey()
		default:
			key, err = newEd25519Key(a.reader())
		}
		if err != nil {
			return store.CAKey{}, fmt.Errorf("new %s CA key: %w", kind, err)
		}
	}
	if err := checkPublicKey(key.Public()); err != nil {
		return store.CAKey{}, fmt.Errorf("new %s CA key: %w", kind, err)
	}
	var public []byte
	switch kind {
	case store.CertX509:
		cert, err := a.newX509CACert(key)
		if err != nil {
			return store.CAKey{}, fmt.Errorf("new X.509 CA key: %w", err)
		}
		old := a.ks().xca
		tmpl := *cert
		if tmpl.SerialNumber, err = a.x509Serial(); err != nil {
			return store.CAKey{}, fmt.Errorf("new X.509 CA key: %w", err)
		}
		// The old CA signs with its own algorithm, which need not be the
		// new key's (an Ed25519 CA cross-signing an ECDSA one): let
		// CreateCertificate choose it from old.key.
		tmpl.SignatureAlgorithm = x509.UnknownSignatureAlgorithm
		cross, err := x509.CreateCertificate(a.reader(), &tmpl, old.cert, key.Public(), old.key)
		if err != nil {
			return store.CAKey{}, fmt.Errorf("new X.509 CA key: cross-signing it with the active CA: %w", err)
		}
		public = slices.Concat(cert.Raw, cross, old.cert.Raw)
	case store.CertSSHUser, store.CertSSHHost:
		pub, err := ssh.NewPublicKey(key.Public())
		if err != nil {
			return store.CAKey{}, fmt.Errorf("new %s CA key: %w", kind, err)
		}
		public = pub.Marshal()
	default:
		return store.CAKey{}, fmt.Errorf("new CA key: unknown kind %q", kind)
	}
	sealed, err := sealCAKey(key, kind, s)
	if err != nil {
		return store.CAKey{}, fmt.Errorf("new CA key: %w", err)
	}
	return store.CAKey{Kind: string(kind), Public: public, SealedPrivate: sealed, CreatedAt: a.now()}, nil
}

// ServerChain returns the chain to serve with leaf, a certificate this
// Authority signed: leaf, the CA that signed it, then, for the active CA,
// its cross-signature and the CA it replaced (kept after the rotation, so
// that a peer still pinning the old CA authenticates the gateway), and,
// during a rotation, the other trusted CAs, so that a peer pinning any of
// them verifies it.
func (a *Authority) ServerChain(leaf *x509.Certificate) [][]byte {
	ca := a.ks().xca
	chain := [][]byte{leaf.Raw}
	var issuer *x509.Certificate
	for _, c := range ca.trusted {
		if leaf.CheckSignatureFrom(c) == nil {
			issuer = c
			break
		}
	}
	if issuer == nil {
		return append(chain, ca.cert.Raw)
	}
	add := func(c *x509.Certificate) {
		for _, raw := range chain {
			if bytes.Equal(raw, c.Raw) {
				return
			}
		}
		chain = append(chain, c.Raw)
	}
	add(issuer)
	if issuer.Equal(ca.cert) {
		for _, c := range ca.cross {
			add(c)
		}
		for _, c := range ca.prev {
			add(c)
		}
	}
	for _, c := range ca.trusted {
		add(c)
	}
	return chain
}

// CAFingerprint names a stored CA key for people: the pin (sha256:HEX) of
// an X.509 CA, the SHA256 fingerprint ssh-keygen -l shows of an SSH CA.
func CAFingerprint(k store.CAKey) string {
	switch store.CertKind(k.Kind) {
	case store.CertX509:
		cert, _, _, err := parseCACerts(k.Public)
		if err != nil {
			return "unreadable: " + err.Error()
		}
		return trust.Pin(cert)
	default:
		pub, err := ssh.ParsePublicKey(k.Public)
		if err != nil {
			return "unreadable: " + err.Error()
		}
		return ssh.FingerprintSHA256(pub)
	}
}

// parseCACerts parses a stored X.509 CA key's public part: the CA
// certificate, then any cross-signatures of it and the certificates of the
// CAs that made them (NewCAKey).
func parseCACerts(der []byte) (ca *x509.Certificate, cross, prev []*x509.Certificate, err error) {
	all, err := x509.ParseCertificates(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("parsing CA certificate: %w", err)
	}
	if len(all) == 0 {
		return nil, nil, nil, errors.New("parsing CA certificate: none stored")
	}
	if ca, err = parseCACert(all[0].Raw); err != nil {
		return nil, nil, nil, err
	}
	for _, c := range all[1:] {
		switch {
		case !c.BasicConstraintsValid || !c.IsCA:
			return nil, nil, nil, errors.New("a certificate stored with the CA is not a CA certificate")
		case bytes.Equal(c.RawSubjectPublicKeyInfo, ca.RawSubjectPublicKeyInfo):
			cross = append(cross, c)
		default:
			prev = append(prev, c)
		}
	}
	return ca, cross, prev, nil
}
