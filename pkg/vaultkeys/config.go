package vaultkeys

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Environment variables honoured when the matching Config field is empty,
// as the vault CLI does.
const (
	EnvAddr      = "VAULT_ADDR"
	EnvToken     = "VAULT_TOKEN"
	EnvCACert    = "VAULT_CACERT"
	EnvNamespace = "VAULT_NAMESPACE"
)

// Config says how to reach and log in to Vault. The zero value of each
// field means its default; Addr, and a token or AppRole credentials, must
// come from here or the environment.
type Config struct {
	// Addr is Vault's URL, https://host:8200; empty means $VAULT_ADDR.
	// Plain http is accepted only to a loopback address (or with Insecure).
	Addr string
	// Token authenticates with a Vault token; empty means $VAULT_TOKEN
	// unless RoleID is set.
	Token string
	// RoleID and SecretID log in with AppRole instead of a token; the
	// client logs in again by itself when its token can no longer be
	// renewed.
	RoleID, SecretID string
	// AppRoleMount is where the AppRole auth method is mounted; empty
	// means "approle".
	AppRoleMount string
	// CACert is a PEM file of the CA certificates that verify Vault's TLS
	// certificate; empty means $VAULT_CACERT, then the system roots.
	CACert string
	// Namespace is the Vault Enterprise namespace; empty means
	// $VAULT_NAMESPACE, then none.
	Namespace string
	// TransitMount is where the Transit engine is mounted; empty means
	// "transit".
	TransitMount string
	// Timeout bounds each request to Vault; zero means 10 seconds.
	Timeout time.Duration
	// Insecure allows plain http to a non-loopback address. The network is
	// hostile: set it only behind a trusted proxy or for tests.
	Insecure bool
	// Logger receives token renewal and re-login events; nil discards
	// them. Secrets are never logged.
	Logger *slog.Logger
}

// DefaultTimeout bounds each request to Vault when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// resolve fills in the defaults and the environment, and validates c.
func (c Config) resolve() (Config, error) {
	if c.Addr == "" {
		c.Addr = os.Getenv(EnvAddr)
	}
	if c.Addr == "" {
		return c, errors.New("vault: no Vault address: give --vault-addr or set VAULT_ADDR")
	}
	if (c.RoleID == "") != (c.SecretID == "") {
		return c, errors.New("vault: AppRole login needs both a role id and a secret id")
	}
	if c.RoleID == "" && c.Token == "" {
		c.Token = os.Getenv(EnvToken)
	}
	if c.RoleID == "" && c.Token == "" {
		return c, errors.New("vault: no credentials: give a Vault token (VAULT_TOKEN) or an AppRole role id and secret id")
	}
	if c.RoleID != "" && c.Token != "" {
		return c, errors.New("vault: give a token or AppRole credentials, not both")
	}
	if c.CACert == "" {
		c.CACert = os.Getenv(EnvCACert)
	}
	if c.Namespace == "" {
		c.Namespace = os.Getenv(EnvNamespace)
	}
	if c.AppRoleMount == "" {
		c.AppRoleMount = "approle"
	}
	if c.TransitMount == "" {
		c.TransitMount = "transit"
	}
	c.AppRoleMount = strings.Trim(c.AppRoleMount, "/")
	c.TransitMount = strings.Trim(c.TransitMount, "/")
	if c.Timeout < 0 {
		return c, fmt.Errorf("vault: timeout %v is negative", c.Timeout)
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if err := checkAddr(c.Addr, c.Insecure); err != nil {
		return c, err
	}
	return c, nil
}

// checkAddr accepts https anywhere, a unix socket, and http only to a
// loopback address unless insecure.
func checkAddr(addr string, insecure bool) error {
	u, err := url.Parse(addr)
	if err != nil {
		return fmt.Errorf("vault: address %q is not a URL: %w", addr, err)
	}
	switch u.Scheme {
	case "https", "unix":
		return nil
	case "http":
		if insecure || isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("vault: refusing plain http to %s: the token and keys would cross the network in the clear; use https (or Insecure for a trusted path)", addr)
	}
	return fmt.Errorf("vault: address %q must start with https:// (or http:// to a loopback address)", addr)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// httpClient is the HTTP client for Vault: TLS 1.2 at least (Vault's own
// minimum; TLS 1.3 is negotiated whenever Vault offers it), verified
// against caFile or the system roots, redirects left to the Vault API
// client. Environment settings such as VAULT_SKIP_VERIFY are not honoured.
func httpClient(caFile string, timeout time.Duration) (*http.Client, error) {
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("vault: reading the CA certificate for Vault: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("vault: %s holds no PEM certificate", caFile)
		}
		tlsConf.RootCAs = pool
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConf
	tr.TLSHandshakeTimeout = timeout
	tr.ForceAttemptHTTP2 = true
	tr.MaxIdleConnsPerHost = 16
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}, nil
}
