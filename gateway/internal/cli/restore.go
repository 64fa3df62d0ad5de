package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/gateway"
	"github.com/tunnelhq/tunnel/pkg/backup"
)

func newRestoreCmd() *cobra.Command {
	var cfg gateway.RestoreConfig
	var identity string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "restore --in FILE --identity AGE-KEY-FILE [--data-dir DIR | --store URL]",
		Short: "Restore a backup into an empty data directory or database",
		Long: `restore decrypts a backup made by tunnel-gateway backup with the age identity
in --identity (a file of AGE-SECRET-KEY-1... lines), checks it whole (age
authenticates it; the payload's SHA-256 must match its header), and only
then restores it: into --data-dir, which must hold no store yet, or into
the PostgreSQL database of --store, which must hold no cluster yet. A
damaged or truncated backup, or one not encrypted to the identity, is
refused and nothing is written.

The restored cluster needs its key-encryption key: restore says which KEK
ID the backup's secrets are sealed with, and where to copy the KEK file
(--kek-file, default DIR/kek) before tunnel-gateway run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			if cfg.In == "" || identity == "" {
				return errors.New("--in FILE and --identity AGE-KEY-FILE are required")
			}
			ids, err := backup.ReadIdentities(identity)
			if err != nil {
				return err
			}
			cfg.Identities = ids
			res, err := gateway.Restore(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(out, res)
			}
			h := res.Header
			fmt.Fprintf(out, "Restored cluster %q from the backup made %s by %s (%s store, schema %d).\n",
				h.Cluster, h.CreatedAt.Format("2006-01-02 15:04:05 MST"), h.Gateway, h.StoreKind, h.SchemaVersion)
			if h.KEK.Backend == "vault" {
				fmt.Fprintf(out, "Its secrets are sealed with the Vault Transit key %s: run the gateway with the cluster's --vault-addr.\n", h.KEK.VaultKey)
			} else if res.KEKMissing != "" {
				fmt.Fprintf(out, "Before tunnel-gateway run: %s.\n", res.KEKMissing)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.In, "in", "", "the backup file")
	f.StringVar(&identity, "identity", "", "file of the age identity (AGE-SECRET-KEY-1...) the backup is encrypted to")
	f.StringVar(&cfg.DataDir, "data-dir", "", "the new gateway's data directory: receives the SQLite store, and is where the KEK file goes (created, mode 0700)")
	f.StringVar(&cfg.Store, "store", "", "PostgreSQL URL of an empty database to restore into (instead of SQLite in --data-dir)")
	f.BoolVar(&cfg.StoreInsecure, "store-insecure", false, "DANGEROUS: allow plaintext or unverified TLS to a PostgreSQL host other than loopback")
	f.StringVar(&cfg.KEKFile, "kek-file", "", "where the gateway will read its KEK (default DIR/kek), to check it is the backup's")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
