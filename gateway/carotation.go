package gateway

import (
	"context"

	"github.com/tunnelhq/tunnel/pkg/store"
)

// CA rotation (docs/CA-ROTATION.md): every step changes the store's CA
// keys and emits a store.ChangeCA; each gateway of the cluster then
// reloads its CA keys (certs.Authority.Refresh), so that what it trusts
// and signs with follows at once, and its own TLS certificate is issued
// again by the active CA (servercert). The reconciliation sweep reloads
// too, in case a change was missed; it reads the keys and does nothing
// when they are the ones in use. When they changed (here or by the admin
// API), every agent connected to this gateway is sent the new trust bundle
// over its connection (relay.PushTrust): as every gateway reloads, every
// connected agent trusts the new keys within a second of each step, not at
// its next renewal.

// applyCA reloads the CA keys if the store's changed.
func (f *fanout) applyCA(ctx context.Context) {
	if f.ca == nil {
		return
	}
	if err := f.ca(ctx); err != nil {
		f.log.Warn("reload the CA keys after a change; the next reconciliation retries", "err", storeError(err))
	}
}

// reloadCA reloads the CA keys if the store's changed.
func (g *Gateway) reloadCA(ctx context.Context) error {
	changed, err := g.ca.Refresh(func() ([]store.CAKey, uint64, error) { return store.ReadCAKeys(ctx, g.store) })
	if err == nil && changed {
		g.cfg.Log.Info("CA keys reloaded", "x509_pin", g.ca.Pin(), "trusted_x509_cas", len(g.ca.X509CAs()),
			"trusted_ssh_user_cas", len(g.ca.SSHUserCAs()), "trusted_ssh_host_cas", len(g.ca.SSHHostCAs()))
	}
	// Also when the keys were reloaded by the admin API answering a
	// rotation step on this gateway: PushTrust sends the bundle of a
	// generation of keys once.
	if err == nil && g.relay != nil {
		g.relay.PushTrust()
	}
	return err
}
