package dbcreds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/tunnelhq/tunnel/pkg/wire"
)

// VaultAPI is Vault through its API client (the gateway's, whose token
// pkg/vaultkeys renews).
type VaultAPI struct {
	Client *vault.Client
}

// Lease reads path: Vault's database engine creates a user and answers
// its name and password with a lease.
func (v VaultAPI) Lease(ctx context.Context, path string) (Credential, error) {
	s, err := v.Client.Logical().ReadWithContext(ctx, path)
	if err != nil {
		return Credential{}, vaultError(v.Client.Address(), err)
	}
	if s == nil {
		return Credential{}, fmt.Errorf("Vault at %s has nothing at %s: create the role (vault write %s ...)", v.Client.Address(), path, path)
	}
	user, _ := s.Data["username"].(string)
	pw, _ := s.Data["password"].(string)
	return Credential{LeaseID: s.LeaseID, User: user, Password: wire.Secret(pw),
		TTL: time.Duration(s.LeaseDuration) * time.Second, Renewable: s.Renewable}, nil
}

// Renew extends the lease.
func (v VaultAPI) Renew(ctx context.Context, leaseID string, increment time.Duration) (time.Duration, error) {
	s, err := v.Client.Sys().RenewWithContext(ctx, leaseID, int(increment/time.Second))
	if err != nil {
		return 0, vaultError(v.Client.Address(), err)
	}
	if s == nil {
		return 0, errors.New("Vault answered nothing to a renewal")
	}
	return time.Duration(s.LeaseDuration) * time.Second, nil
}

// Revoke ends the lease at once.
func (v VaultAPI) Revoke(ctx context.Context, leaseID string) error {
	if err := v.Client.Sys().RevokeWithContext(ctx, leaseID); err != nil {
		return vaultError(v.Client.Address(), err)
	}
	return nil
}

// vaultError keeps Vault's own words (its errors list), not the request dump.
func vaultError(addr string, err error) error {
	var re *vault.ResponseError
	if errors.As(err, &re) {
		msg := fmt.Sprintf("HTTP %d", re.StatusCode)
		if len(re.Errors) > 0 {
			b, _ := json.Marshal(re.Errors)
			msg += ": " + string(b)
		}
		if re.StatusCode == 503 {
			msg = "Vault is sealed or unavailable (" + msg + ")"
		}
		return fmt.Errorf("Vault at %s: %s", addr, msg)
	}
	return fmt.Errorf("Vault at %s: %w", addr, err)
}
