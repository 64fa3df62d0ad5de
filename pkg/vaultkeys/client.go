package vaultkeys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	vault "github.com/hashicorp/vault/api"
)

// Client is a logged-in connection to Vault that keeps its token alive.
// It is safe for concurrent use; Close stops the renewal.
//
// Token lifecycle, run by one goroutine that Close waits for:
//
//	login (AppRole) or look up the token
//	  └─> LifetimeWatcher renews it (RenewCh: renewed)
//	        └─> DoneCh: it can no longer be renewed, or renewing failed
//	              ├─ AppRole: log in again (retrying with backoff while
//	              │  Vault is unreachable or sealed), then watch the new token
//	              └─ token: nothing more to do; requests fail with ErrToken
//	                 once it expires
type Client struct {
	api     *vault.Client
	login0  *vault.Client // api without a token, for AppRole logins
	addr    string
	transit string
	timeout time.Duration
	log     *slog.Logger
	http    *http.Client // the transport api and login0 share

	roleID, secretID, appRoleMount string

	ctx       context.Context // cancelled by Close
	cancel    context.CancelFunc
	done      chan struct{} // closed when the renewal goroutine has returned
	closeOnce sync.Once

	renewals atomic.Int64 // token renewals
	logins   atomic.Int64 // successful AppRole logins
}

// retryWait bounds the wait between attempts to log in again.
const (
	minRetryWait = 500 * time.Millisecond
	maxRetryWait = 30 * time.Second
)

// New connects to Vault as cfg says and logs in: with AppRole it logs in
// now, with a token it looks the token up, so that a wrong address or
// credential fails here with a sentence that says which. The token is then
// renewed in the background until Close.
func New(ctx context.Context, cfg Config) (*Client, error) {
	c, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	hc, err := httpClient(c.CACert, c.Timeout)
	if err != nil {
		return nil, err
	}
	api, err := vault.NewClient(&vault.Config{
		Address:      c.Addr,
		HttpClient:   hc,
		Timeout:      c.Timeout,
		MaxRetries:   1,
		MinRetryWait: 100 * time.Millisecond,
		MaxRetryWait: 500 * time.Millisecond,
	})
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	// NewClient reads VAULT_TOKEN and VAULT_NAMESPACE itself; the resolved
	// config is the only source.
	api.ClearToken()
	api.ClearNamespace()
	if c.Namespace != "" {
		api.SetNamespace(c.Namespace)
	}
	login0, err := api.CloneWithHeaders()
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	login0.ClearToken() // the clone read VAULT_TOKEN again
	cl := &Client{
		api: api, login0: login0, http: hc, addr: c.Addr, transit: c.TransitMount, timeout: c.Timeout, log: c.Logger,
		roleID: c.RoleID, secretID: c.SecretID, appRoleMount: c.AppRoleMount,
		done: make(chan struct{}),
	}
	var secret *vault.Secret
	if cl.roleID != "" {
		secret, err = cl.login(ctx)
	} else {
		api.SetToken(c.Token)
		secret, err = cl.lookupSelf(ctx)
	}
	if err != nil {
		return nil, err
	}
	cl.ctx, cl.cancel = context.WithCancel(context.Background())
	go func() {
		defer close(cl.done)
		cl.keepAlive(secret)
	}()
	return cl, nil
}

// Close stops renewing the token and waits for the renewal goroutine. The
// token is not revoked: another gateway may share an AppRole, and a token
// given by the operator is theirs. Safe to call twice.
func (c *Client) Close() error {
	c.closeOnce.Do(c.cancel)
	<-c.done
	c.http.CloseIdleConnections()
	return nil
}

// Addr returns Vault's address.
func (c *Client) Addr() string { return c.addr }

// API returns the underlying Vault API client, logged in, for operations
// this package does not wrap. Its token changes when the client logs in
// again.
func (c *Client) API() *vault.Client { return c.api }

// Renewals returns how many times the token was renewed.
func (c *Client) Renewals() int64 { return c.renewals.Load() }

// Logins returns how many AppRole logins succeeded (0 with a token).
func (c *Client) Logins() int64 { return c.logins.Load() }

// Health checks that Vault answers, is unsealed and accepts the token. It
// returns nil or an error matching ErrUnreachable, ErrSealed or ErrToken.
func (c *Client) Health(ctx context.Context) error {
	_, err := c.lookupSelf(ctx)
	return err
}

// login logs in with AppRole and installs the new token.
func (c *Client) login(ctx context.Context) (*vault.Secret, error) {
	path := "auth/" + c.appRoleMount + "/login"
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	// The login request must not carry a previous, maybe revoked, token.
	s, err := c.login0.Logical().WriteWithContext(ctx, path, map[string]any{
		"role_id": c.roleID, "secret_id": c.secretID,
	})
	if err != nil {
		err = classify(c.addr, path, "", err)
		var e *Error
		if errors.As(err, &e) && (e.Kind == nil || e.Kind == ErrPermission) {
			// A 400 "invalid role or secret ID" or a 403: the credentials.
			e.Kind = ErrToken
		}
		return nil, err
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, &Error{Addr: c.addr, Path: path, Err: errors.New("the AppRole login returned no token")}
	}
	c.api.SetToken(s.Auth.ClientToken)
	c.logins.Add(1)
	return s, nil
}

// lookupSelf looks the current token up, returning it as a Secret the
// LifetimeWatcher can renew.
func (c *Client) lookupSelf(ctx context.Context) (*vault.Secret, error) {
	const path = "auth/token/lookup-self"
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	s, err := c.api.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return nil, classify(c.addr, path, "", err)
	}
	if s == nil {
		return nil, &Error{Addr: c.addr, Path: path, Err: errors.New("the token lookup returned nothing")}
	}
	renewable, _ := s.TokenIsRenewable()
	ttl, _ := s.TokenTTL()
	return &vault.Secret{Auth: &vault.SecretAuth{
		ClientToken:   c.api.Token(),
		Renewable:     renewable,
		LeaseDuration: int(ttl / time.Second),
	}}, nil
}

// keepAlive renews secret's token until Close, logging in again with
// AppRole when it cannot be renewed any more.
func (c *Client) keepAlive(secret *vault.Secret) {
	for {
		if secret.Auth.LeaseDuration > 0 {
			c.watch(secret)
		}
		if c.ctx.Err() != nil {
			return
		}
		if c.roleID == "" {
			if secret.Auth.LeaseDuration > 0 {
				c.log.Warn("the Vault token cannot be renewed any further and will expire; give the gateway a new token or use AppRole", "vault", c.addr)
			}
			<-c.ctx.Done() // a root or periodic-less token: nothing to renew
			return
		}
		var err error
		secret, err = c.loginRetrying()
		if err != nil {
			return // closed
		}
	}
}

// watch runs a LifetimeWatcher on secret until the token can no longer be
// renewed or the client is closed.
func (c *Client) watch(secret *vault.Secret) {
	w, err := c.api.NewLifetimeWatcher(&vault.LifetimeWatcherInput{Secret: secret})
	if err != nil {
		c.log.Warn("cannot watch the Vault token", "vault", c.addr, "err", err)
		return
	}
	started := make(chan struct{})
	go func() {
		defer close(started)
		w.Start()
	}()
	defer func() {
		w.Stop()
		<-started
	}()
	for {
		select {
		case <-c.ctx.Done():
			return
		case err := <-w.DoneCh():
			if err != nil {
				c.log.Warn("renewing the Vault token failed", "vault", c.addr, "err", flatten(err.Error()))
			} else {
				c.log.Info("the Vault token reached the end of its renewable life", "vault", c.addr)
			}
			return
		case r := <-w.RenewCh():
			c.renewals.Add(1)
			ttl := 0
			if r.Secret != nil && r.Secret.Auth != nil {
				ttl = r.Secret.Auth.LeaseDuration
			}
			c.log.Debug("renewed the Vault token", "vault", c.addr, "ttl_seconds", ttl)
		}
	}
}

// loginRetrying logs in with AppRole, retrying with backoff until it
// succeeds or the client is closed.
func (c *Client) loginRetrying() (*vault.Secret, error) {
	wait := minRetryWait
	for {
		s, err := c.login(c.ctx)
		if err == nil {
			c.log.Info("logged in to Vault again with AppRole", "vault", c.addr)
			return s, nil
		}
		if c.ctx.Err() != nil {
			return nil, c.ctx.Err()
		}
		c.log.Warn("logging in to Vault failed; retrying", "vault", c.addr, "err", err.Error(), "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-c.ctx.Done():
			t.Stop()
			return nil, c.ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, maxRetryWait)
	}
}

// write and read run one Transit request under the client's lifetime and
// timeout, classifying failures. key names the Transit key, for messages.
func (c *Client) write(ctx context.Context, path, key string, data map[string]any) (*vault.Secret, error) {
	return c.do(ctx, path, key, func(ctx context.Context) (*vault.Secret, error) {
		return c.api.Logical().WriteWithContext(ctx, path, data)
	})
}

func (c *Client) read(ctx context.Context, path, key string) (*vault.Secret, error) {
	return c.do(ctx, path, key, func(ctx context.Context) (*vault.Secret, error) {
		return c.api.Logical().ReadWithContext(ctx, path)
	})
}

func (c *Client) do(ctx context.Context, path, key string, f func(context.Context) (*vault.Secret, error)) (*vault.Secret, error) {
	if c.ctx.Err() != nil {
		return nil, &Error{Kind: ErrClosed, Addr: c.addr, Path: path, Key: key}
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	stop := context.AfterFunc(c.ctx, cancel)
	defer stop()
	s, err := f(ctx)
	if err != nil {
		if c.ctx.Err() != nil {
			return nil, &Error{Kind: ErrClosed, Addr: c.addr, Path: path, Key: key, Err: err}
		}
		return nil, classify(c.addr, path, key, err)
	}
	return s, nil
}
