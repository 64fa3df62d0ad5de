package cli

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/tunnelhq/tunnel/gateway"
	"github.com/tunnelhq/tunnel/pkg/secretfile"
	"github.com/tunnelhq/tunnel/pkg/termqr"
)

func newInitCmd() *cobra.Command {
	var cfg gateway.InitConfig
	var pwFile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "init --data-dir DIR [--cluster NAME] --admin NAME [--admin-password-file F] [--json]",
		Short: "Create a cluster: CA keys, store and the first admin",
		Long: `init creates the data directory, its key-encryption key (DIR/kek, 0600), the
store and the cluster CA set (X.509, SSH user and SSH host CAs, sealed at
rest). It prints the CA pin (sha256:HEX) that clients pass to tunnel login.

--admin creates the first admin user and a role "admin" that grants the
admin API and a login of the admin's own name, and prints the admin's TOTP
enrolment (otpauth:// URI and secret; a QR code on a terminal). It is
required: nobody could log in to a cluster without an admin, to add users
or enrol agents.
The password comes from --admin-password-file, TUNNEL_ADMIN_PASSWORD, or a
prompt on a terminal.

With --store postgres://... the cluster lives in that PostgreSQL database,
which every gateway of the cluster shares; the data directory keeps the KEK
(copy it to every other gateway, which then runs tunnel-gateway run --store
with the same URL, without init). Use TLS to the database:
  --store 'postgres://tunnel:PW@db:5432/tunnel?sslmode=verify-full&sslrootcert=/etc/tunnel/pg-ca.pem'
A host other than loopback is refused without a verified TLS connection
unless --store-insecure (dangerous) is given.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyEnv(cmd.Flags()); err != nil {
				return err
			}
			if cfg.DataDir == "" {
				return errors.New("--data-dir is required")
			}
			if cfg.Admin == "" && cfg.Store != "" {
				return errors.New("--admin NAME is required to create a cluster; to add a gateway to the cluster already on --store, do not run init: copy the KEK file from the first gateway and run tunnel-gateway run --store with the same URL")
			}
			if cfg.Admin == "" {
				return errors.New("--admin NAME is required: nobody could log in to a cluster without an admin (to add users or enrol agents)")
			}
			pw, err := adminPassword(pwFile)
			if err != nil {
				return err
			}
			cfg.AdminPassword = pw
			res, err := gateway.Init(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				return writeJSON(out, res)
			}
			fmt.Fprintf(out, "Created cluster %q in %s.\nCA pin: %s\n", res.Cluster, res.DataDir, res.Pin)
			if res.Admin != nil {
				fmt.Fprintln(out)
				termqr.PrintEnrollment(out, res.Admin.User, res.Admin.URI, res.Admin.Secret)
			}
			if cfg.Store != "" {
				fmt.Fprintf(out, "\nNext: tunnel-gateway run --data-dir %s --store ... (the same URL); on every other gateway, copy the KEK file first\n", res.DataDir)
				return nil
			}
			fmt.Fprintf(out, "\nNext: tunnel-gateway run --data-dir %s\n", res.DataDir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the store and keys (created, mode 0700)")
	f.StringVar(&cfg.Cluster, "cluster", gateway.DefaultCluster, "cluster name")
	f.StringVar(&cfg.Admin, "admin", "", "name of the first admin user (required)")
	f.StringVar(&pwFile, "admin-password-file", "", "file holding the first admin's password ('-' for stdin); TUNNEL_ADMIN_PASSWORD works too")
	f.StringVar(&cfg.KEKFile, "kek-file", "", "key-encryption key file (default DIR/kek, created if missing; not used with --vault-addr)")
	vaultFlags(f, &cfg.Vault)
	f.DurationVar(&cfg.MaxTTL, "max-ttl", 12*time.Hour, "cluster maximum lifetime of user certificates (at most 12h)")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.StringVar(&cfg.Store, "store", "", "PostgreSQL URL of the store the cluster's gateways share (default: SQLite in the data directory); use sslmode=verify-full&sslrootcert=CA.pem")
	f.BoolVar(&cfg.StoreInsecure, "store-insecure", false, "DANGEROUS: allow plaintext or unverified TLS to a PostgreSQL host other than loopback")
	return cmd
}

func adminPassword(file string) (string, error) {
	if file != "" {
		return secretfile.Read(file)
	}
	if pw := os.Getenv("TUNNEL_ADMIN_PASSWORD"); pw != "" {
		return pw, nil
	}
	if !term.IsTerminal(int(os.Stdin.Fd())) {
		return "", errors.New("no admin password: give --admin-password-file F or set TUNNEL_ADMIN_PASSWORD")
	}
	fmt.Fprint(os.Stderr, "Password for the first admin: ")
	a, err := term.ReadPassword(int(os.Stdin.Fd()))
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	fmt.Fprint(os.Stderr, "Again: ")
	b, err := term.ReadPassword(int(os.Stdin.Fd()))
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	if string(a) != string(b) {
		return "", errors.New("the passwords differ")
	}
	return string(a), nil
}
