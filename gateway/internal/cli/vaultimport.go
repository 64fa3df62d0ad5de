package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/gateway"
)

func newVaultCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vault",
		Short: "Vault as the cluster's key backend",
	}
	cmd.AddCommand(newVaultImportCmd())
	return cmd
}

func newVaultImportCmd() *cobra.Command {
	var cfg gateway.VaultImportConfig
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "import --vault-addr URL [--data-dir DIR | --kek-file F] [--store URL]",
		Short: "Move a cluster's keys from its KEK file into Vault (every gateway stopped)",
		Long: `import moves the keys of a cluster made without Vault into Vault's Transit
engine, with every gateway of the cluster stopped:

 1. the cluster's key-encryption key is created in Vault (a Transit key,
    as tunnel-gateway init --vault-addr makes);
 2. each CA private key (X.509, SSH user, SSH host; those of a rotation
    too) is opened with the KEK file and imported into Transit, wrapped
    for Vault (Transit's "bring your own key"), not exportable; the store
    keeps only where it is. The other sealed values (TOTP secrets, session
    recordings) are sealed again with the Transit key;
 3. the store records that the cluster's keys are in Vault.

The CA keys stay the same keys: pins, certificates and trust bundles stay
valid, and agents and users notice nothing. Then start every gateway with
--vault-addr (and its token or AppRole): no KEK file is needed any more.
Keep a copy of the KEK file offline until the gateways run, then destroy
it.

It refuses while a gateway of the cluster sends heartbeats. It is safe to
interrupt: run it again and it finishes the move. The token needs, besides
the policy of a gateway, transit/wrapping_key (read) and
transit/keys/* (create, update).`,
		Example: `  tunnel-gateway vault import --data-dir /var/lib/tunnel-gateway \
      --vault-addr https://vault.internal:8200 --vault-token-file /etc/tunnel/vault-token`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			if !asJSON {
				cfg.Progress = cmd.OutOrStdout()
			}
			res, err := gateway.ImportKeysToVault(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(out, res)
			}
			if res.Already {
				fmt.Fprintf(out, "The cluster's keys are in Vault already (Transit KEK %s): nothing to move.\n", res.KEK)
				return nil
			}
			fmt.Fprintf(out, "Moved: CA keys %s and %d sealed values now under Transit key %s.\n", strings.Join(res.CAKeys, ", "), res.Resealed, res.KEK)
			return nil
		},
	}
	f := cmd.Flags()
	sealedStoreFlags(f, &cfg.DataDir, &cfg.KEKFile, &cfg.Store, &cfg.StoreInsecure)
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	vaultFlags(f, &cfg.Vault)
	return cmd
}
