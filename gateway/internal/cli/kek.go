package cli

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/tunnelhq/tunnel/gateway"
)

func newKEKCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kek",
		Short: "Manage the key-encryption key",
	}
	cmd.AddCommand(newKEKRotateCmd())
	return cmd
}

func newKEKRotateCmd() *cobra.Command {
	var cfg gateway.KEKRotateConfig
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "rotate [--data-dir DIR | --kek-file F] [--store URL]",
		Short: "Re-seal every secret under a new key-encryption key, while the gateways run",
		Long: `rotate makes a new key-encryption key (KEK) and re-seals every secret the
store holds sealed (CA private keys, TOTP secrets, session recordings) with
it, while the gateways run:

 1. the new key is added at the head of the KEK file, the old one kept after
    it; running gateways reload the file, seal with the new key and open
    with either;
 2. every value still sealed with the old key is re-sealed, and replaced
    only if it did not change meanwhile;
 3. the old key is removed from the file.

It is safe to interrupt at any point: run it again and it resumes (a KEK
file holding two keys means a rotation in progress). With several gateways
on other hosts, run it with --prepare first, copy the KEK file (now holding
both keys) to every gateway, then run it without --prepare, and copy the
final file again.

With Vault (--vault-addr), the Transit key is rotated and every value
rewrapped to its new version. Each rotation is recorded in the audit log.

Run it as the KEK file's owner or as root: the rewritten file keeps its
owner, so that a gateway running as another user still reads it. One
rotation runs at a time, on this host and across the gateways sharing the
store. A value that cannot be opened any more stops the rotation, which
says how to get past it (reset a user's TOTP, or --skip the value).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			if !asJSON {
				cfg.Progress = cmd.OutOrStdout()
			}
			res, err := gateway.RotateKEK(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(out, res)
			}
			switch {
			case res.Prepared:
				fmt.Fprintf(out, "Prepared: copy the KEK file to every gateway of the cluster, then run tunnel-gateway kek rotate again to re-seal.\n")
			case res.Backend == "vault":
				fmt.Fprintf(out, "KEK rotated: Vault Transit key %s is at version %d; %d values rewrapped.\n", res.VaultKey, res.VaultVersion, res.Resealed)
			default:
				fmt.Fprintf(out, "KEK rotated: key-encryption key ID %s; %d values re-sealed. Copy the KEK file to every other gateway of the cluster.\n", res.NewKey, res.Resealed)
			}
			return nil
		},
	}
	f := cmd.Flags()
	sealedStoreFlags(f, &cfg.DataDir, &cfg.KEKFile, &cfg.Store, &cfg.StoreInsecure)
	f.BoolVar(&cfg.Prepare, "prepare", false, "only add the new key to the KEK file (to copy it to the other gateways first)")
	f.DurationVar(&cfg.Settle, "settle", 0, "wait this long after adding the new key, for seals in flight on running gateways (default 2s)")
	f.DurationVar(&cfg.Throttle, "throttle", 0, "pause after each value re-sealed, to spread the load on a busy store")
	f.StringArrayVar(&cfg.Skip, "skip", nil, "leave this sealed value (KIND/KEY, as a refusal names it: totp/carol) as it is, unopenable for good, instead of stopping; repeatable")
	vaultFlags(f, &cfg.Vault)
	return cmd
}

// sealedStoreFlags registers where the KEK file and the store of an
// existing cluster are, for the commands that re-seal its values (kek
// rotate, vault import).
func sealedStoreFlags(f *pflag.FlagSet, dataDir, kekFile, storeURL *string, insecure *bool) {
	f.StringVar(dataDir, "data-dir", "", "the gateway's data directory (SQLite store, and the KEK file unless --kek-file)")
	f.StringVar(kekFile, "kek-file", "", "key-encryption key file (default DIR/kek)")
	f.StringVar(storeURL, "store", "", "PostgreSQL URL of the cluster's store (instead of SQLite in --data-dir)")
	f.BoolVar(insecure, "store-insecure", false, "DANGEROUS: allow plaintext or unverified TLS to a PostgreSQL host other than loopback")
}
