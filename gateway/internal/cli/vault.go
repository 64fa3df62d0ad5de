package cli

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/tunnelhq/tunnel/gateway"
)

// vaultFlags registers the flags of Vault as the key backend (init and
// run take the same).
func vaultFlags(f *pflag.FlagSet, v *gateway.VaultConfig) {
	f.StringVar(&v.Addr, "vault-addr", "", "Vault URL holding the cluster's keys (Transit: the CA keys sign there, the KEK seals there; no CA private key on the gateway); VAULT_ADDR is not used unless given here")
	f.StringVar(&v.TokenFile, "vault-token-file", "", "file holding a Vault token (default $VAULT_TOKEN); renewed while the gateway runs")
	f.StringVar(&v.RoleID, "vault-role-id", "", "AppRole role id, instead of a token (with --vault-secret-id-file)")
	f.StringVar(&v.SecretIDFile, "vault-secret-id-file", "", "file holding the AppRole secret id")
	f.StringVar(&v.CACert, "vault-ca-cert", "", "PEM file of the CA that verifies Vault's TLS certificate (default $VAULT_CACERT, then the system roots)")
	f.StringVar(&v.TransitMount, "vault-transit-mount", "transit", "where Vault's Transit engine is mounted")
	f.StringSliceVar(&v.DBMounts, "vault-db-mount", []string{"database"}, "mounts of Vault's database secrets engine that agents' services may name (credentials: {vault: MOUNT/creds/ROLE}); repeat or comma-separate")
	f.DurationVar(&v.DBGrace, "vault-db-grace", 30*time.Second, "how long an unused database credential is kept for the caller's next connection before it is revoked")
}
