// Package certs is the cluster certificate authority: it signs the
// short-lived certificates that users, agents and gateways present.
//
// A cluster has one CA set of three keys: an X.509 CA for mutual TLS, an SSH
// user CA and an SSH host CA. [Generate] makes a new set on first start and
// [Authority.Export] seals its private keys for the store; [Load] opens them
// again on later starts. During a rotation the store holds old keys marked
// inactive: the active key of each kind signs, and every key is trusted
// ([Authority.X509Pool], [Authority.SSHUserCAs], [Authority.SSHHostCAs]).
//
// Key types: a new CA set ([Generate]) has an ECDSA P-256 X.509 CA, the
// type browsers accept in a TLS certificate chain (the gateway's own
// certificate, which this CA signs, opens the web console), and Ed25519
// SSH CAs. A stored key is recognised by its type, so a cluster made with
// an Ed25519 X.509 CA loads and signs as before ([Authority.X509KeyType]
// tells); rotating its X.509 CA ([Authority.NewCAKey]) gives it an ECDSA
// P-256 one, cross-signed by the Ed25519 CA it replaces.
//
// Clients make their own key pairs and send only the public key, so the usual
// flow is:
//
//	pub, err := certs.ParseSSHPublicKey(line) // or certs.ParseCSR for X.509
//	cert, err := ca.IssueSSHUser(certs.SSHUserRequest{User: "alice", Principals: []string{"alice"}, PublicKey: pub})
//
// and, for mTLS, [Authority.IssueX509Client] or [Authority.IssueX509Server]
// with an [identity.ID] that becomes the certificate's single URI SAN.
//
// A requested lifetime is checked, never shortened: a TTL above the role's
// maximum or the cluster's maximum ([ClusterMaxTTL], 12 hours) is refused
// with [ErrTTLTooLong]. An unset TTL means [DefaultUserTTL], or the maximum
// if that is lower. Callers branch on the sentinel errors ([ErrNoPrincipals],
// [ErrTTLTooLong], [ErrUnsupportedKey], [ErrInvalidRequest]) with errors.Is;
// the wrapping message says what was wrong and is fit to show to a user.
//
// Time and randomness are injected through [Config] so that tests can move the
// clock and reproduce serial numbers.
package certs
