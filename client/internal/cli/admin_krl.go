package cli

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/sshkrl"
)

// maxKRL bounds the KRL read from the gateway: sshkrl.Parse reads at
// most sshkrl.MaxSerials (a million) serials, 8 MiB as a serial list, so
// a larger answer could not be read anyway.
const maxKRL = 9 << 20

func newAdminKRLCmd(env Env) *cobra.Command {
	var gateway, pin, out string
	cmd := &cobra.Command{
		Use:   "krl [--out FILE] [--gateway H:P --ca-pin sha256:HEX]",
		Short: "Write the OpenSSH revocation list (KRL) of the cluster's SSH user CA",
		Long: `krl fetches the cluster's key revocation list (OpenSSH's KRL format) from
the gateway, checked against the CA pin, and writes it to stdout or, with
--out, atomically to FILE. Hosts running stock sshd with TrustedUserCAKeys
use it as RevokedKeys, so that revoked certificates (tunnel admin sessions
revoke, users lock) are refused there too:

  tunnel admin krl --out /etc/ssh/tunnel_revoked_keys

It lists the serials of revoked SSH user certificates that have not expired
yet; no user names. Without --gateway and --ca-pin it uses those of your
last login; no login is needed (the list is public, like tunnel ca). See
docs/KRL.md for the sshd setup and a cron line.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := publicClient(gateway, pin)
			if err != nil {
				return err
			}
			defer c.Close()
			var buf limitedBuffer
			if err := c.DoInto(cmd.Context(), http.MethodGet, api.PathKRL, &buf); err != nil {
				var ae *api.Error
				if errors.As(err, &ae) {
					return errors.New(ae.Message)
				}
				return err
			}
			// sshd refuses every login when RevokedKeys is unreadable:
			// never write something it would not read.
			k, err := sshkrl.Parse(buf.Bytes())
			if err != nil {
				return fmt.Errorf("the gateway's answer is not a KRL sshd would read (%v); nothing was written", err)
			}
			if out == "" {
				_, err := cmd.OutOrStdout().Write(buf.Bytes())
				return err
			}
			if err := writeFileAtomic(out, buf.Bytes(), 0o644); err != nil {
				return err
			}
			n := 0
			if len(k.Sections) > 0 {
				for _, r := range k.Sections[0].Serials {
					n += int(min(r.Hi-r.Lo+1, 1<<30))
				}
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s: KRL version %d, %d revoked certificate(s)\n", out, k.Version, n)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "write the KRL to FILE atomically (default: stdout)")
	cmd.Flags().StringVar(&gateway, "gateway", "", "gateway address HOST:PORT (default: from your last login)")
	cmd.Flags().StringVar(&pin, "ca-pin", "", "the cluster CA pin (default: from your last login)")
	return cmd
}

// limitedBuffer is a bytes.Buffer that refuses to grow past maxKRL.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > maxKRL {
		return 0, fmt.Errorf("the gateway's KRL is larger than %d MiB (more than %d revoked certificates); nothing was written", maxKRL>>20, sshkrl.MaxSerials)
	}
	return b.Buffer.Write(p)
}

// writeFileAtomic writes data to a temporary file beside path, syncs it
// and renames it over path, so that a reader (sshd) sees the old file or
// the new one, never a part.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
