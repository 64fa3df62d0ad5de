// Package vaulttest gives the end-to-end tests a throwaway real Vault
// server. The helper itself is pkg/vaultkeys/vaulttest (one copy, shared
// with the unit tests of pkg/vaultkeys and certs); this package only keeps
// the import path the integration tests use.
package vaulttest

import (
	"testing"

	"github.com/tunnelhq/tunnel/pkg/vaultkeys/vaulttest"
)

// Server is a running dev-mode Vault; see pkg/vaultkeys/vaulttest.
type Server = vaulttest.Server

// Options change how the server starts; see pkg/vaultkeys/vaulttest.
type Options = vaulttest.Options

// Start runs a dev-mode Vault on a free loopback port; it fails in CI and
// skips locally when `vault` is missing.
func Start(t testing.TB) *Server {
	t.Helper()
	return vaulttest.Start(t)
}

// StartWith is Start with options (TLS).
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	return vaulttest.StartWith(t, opts)
}
