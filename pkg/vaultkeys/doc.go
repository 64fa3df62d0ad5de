// Package vaultkeys keeps the gateway's keys in HashiCorp Vault: the CA keys
// sign through the Transit secrets engine and the key-encryption key that
// seals the store's secrets is a Transit key, so the gateway never holds a
// CA private key or the KEK.
//
// Use it in three steps:
//
//	c, err := vaultkeys.New(ctx, vaultkeys.Config{Addr: "https://vault:8200", RoleID: id, SecretID: secret})
//	defer c.Close()
//	_, err = c.EnsureKey(ctx, "tunnel-ssh-user-ca", vaultkeys.KeyEd25519) // at init (KeyECDSAP256 for the X.509 CA)
//	ca, err := vaultkeys.NewSigner(ctx, c, "tunnel-ssh-user-ca")      // a crypto.Signer
//	kek, err := vaultkeys.NewSealer(ctx, c, "tunnel-kek")             // a seal.Sealer
//
// [Client] logs in (a token, or AppRole with a role and secret id) and keeps
// its token alive with Vault's LifetimeWatcher, logging in again with
// AppRole when the token can no longer be renewed. [Signer] is a
// crypto.Signer for an Ed25519 or ECDSA P-256 Transit key (the latter
// signs SHA-256 digests with Transit's prehashed signing and returns ASN.1
// signatures, as crypto.Signer does for ECDSA), pinned to the key version
// whose public key it reports, so that golang.org/x/crypto/ssh and
// crypto/x509 can sign certificates with it; [Signer.SignContext] also returns the
// version that signed, for audit events. [Sealer] implements seal.Sealer
// with a derived AES-256-GCM Transit key, the label being Transit's key
// derivation context, and supports rotation and rewrapping.
//
// Failures talking to Vault are one sentence that says what is wrong, and
// match one of [ErrUnreachable], [ErrSealed], [ErrToken], [ErrPermission]
// or [ErrKeyMissing] with errors.Is; a value that does not open matches
// seal.ErrOpen, as with the local sealer.
//
// The connection to Vault is TLS, verified against the system roots or
// Config.CACert; plain http is accepted only to a loopback address unless
// Config.Insecure is set.
package vaultkeys
