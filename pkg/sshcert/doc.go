// Package sshcert is the one check of an SSH user certificate from this
// cluster's user CA (CA trust, validity at an injected clock, principal,
// the source-address critical option) and the one Format/Parse pair of its
// key id, "user=NAME serial=HEX session=ID". certs writes the key id; the
// gateway's jump host and the agent's SSH endpoint check certificates with
// it, each adding its own store or session checks on top.
package sshcert
