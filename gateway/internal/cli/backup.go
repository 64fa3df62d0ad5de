package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/gateway"
	"github.com/tunnelhq/tunnel/pkg/backup"
)

func newBackupCmd() *cobra.Command {
	var cfg gateway.BackupConfig
	var recipients, recipientFiles []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "backup --out FILE --recipient AGE-PUBLIC-KEY [--data-dir DIR | --store URL]",
		Short: "Write an encrypted backup of the cluster's store, while it runs",
		Long: `backup writes a consistent snapshot of the store, taken while the gateways
run (SQLite: VACUUM INTO; PostgreSQL: one REPEATABLE READ, READ ONLY
transaction copying every table), encrypted with age to every --recipient
(an age public key, age1..., from age-keygen) and the keys of
--recipients-file. The file is written atomically, mode 0600, and the
backup is recorded in the audit log.

The key-encryption key is never in a backup: the secrets in it stay sealed,
and the backup only names the KEK's ID. Keep the KEK file apart from the
backups (see docs/BACKUP.md); without it a restored cluster cannot open its
CA keys. Restore with tunnel-gateway restore.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			if cfg.Out == "" {
				return errors.New("--out FILE is required")
			}
			rs, err := backup.ParseRecipients(recipients, recipientFiles)
			if err != nil {
				return err
			}
			cfg.Recipients = rs
			cfg.Actor = "tunnel-gateway backup"
			res, err := gateway.Backup(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(out, res)
			}
			fmt.Fprintf(out, "Backup of cluster %q (%s store, schema %d) written to %s: %d bytes, encrypted to %d recipient(s).\n",
				res.Header.Cluster, res.Header.StoreKind, res.Header.SchemaVersion, res.File, res.Size, len(rs))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Out, "out", "", "the backup file to write (replaced atomically, mode 0600)")
	f.StringArrayVar(&recipients, "recipient", nil, "age public key (age1...) to encrypt to (repeatable)")
	f.StringArrayVar(&recipientFiles, "recipients-file", nil, "file of age public keys, one a line (repeatable)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "the gateway's data directory (SQLite store)")
	f.StringVar(&cfg.Store, "store", "", "PostgreSQL URL of the cluster's store (instead of SQLite in --data-dir)")
	f.BoolVar(&cfg.StoreInsecure, "store-insecure", false, "DANGEROUS: allow plaintext or unverified TLS to a PostgreSQL host other than loopback")
	f.StringVar(&cfg.ID, "id", "", "name of this host in the backup's header and audit event (default: the host name)")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
