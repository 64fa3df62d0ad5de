// Package apiclient calls the gateway's HTTPS API (pkg/api) from the
// engineer's machine. The gateway is authenticated by the CA pin only
// (trust.PinnedClientConfig); the caller, when logged in, by its X.509
// client certificate.
package apiclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

// Client talks to one gateway.
type Client struct {
	base *url.URL
	http *http.Client
}

// Config says how to reach a gateway.
type Config struct {
	// Gateway is HOST:PORT.
	Gateway string
	// Pin is the CA pin (sha256:HEX).
	Pin string
	// Cert, if set, is presented for mutual TLS.
	Cert *tls.Certificate
	// Timeout bounds each request; zero means 30 s.
	Timeout time.Duration
}

// New returns a client for cfg.
func New(cfg Config) (*Client, error) {
	host, _, err := net.SplitHostPort(cfg.Gateway)
	if err != nil {
		return nil, fmt.Errorf("gateway address %q must be HOST:PORT (for example gw.example.com:8443)", cfg.Gateway)
	}
	pin, err := trust.ParsePin(cfg.Pin)
	if err != nil {
		return nil, err
	}
	tlsCfg := trust.PinnedClientConfig(pin, host, nil)
	if cfg.Cert != nil {
		c := *cfg.Cert
		tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	tr := &http.Transport{
		TLSClientConfig:     tlsCfg,
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 10 * time.Second,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		Proxy:               http.ProxyFromEnvironment,
	}
	return &Client{
		base: &url.URL{Scheme: "https", Host: cfg.Gateway},
		http: &http.Client{Transport: tr, Timeout: cfg.Timeout},
	}, nil
}

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Do sends in (if not nil) as JSON and decodes the answer into out (if not
// nil). A non-2xx answer is returned as *api.Error.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	u := *c.base
	u.Path = path
	u.RawQuery = query.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return explain(c.base.Host, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read answer from the gateway: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var ae api.Error
		if json.Unmarshal(data, &ae) != nil || ae.Message == "" {
			return &api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("the gateway answered %s", resp.Status)}
		}
		return &ae
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("the gateway's answer is not understood (%v): is the client older than the gateway?", err)
	}
	return nil
}

// DoInto sends a request without a body and copies a 2xx answer's body,
// whatever its type, to w.
func (c *Client) DoInto(ctx context.Context, method, path string, w io.Writer) error {
	u := *c.base
	u.Path = path
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return explain(c.base.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var ae api.Error
		if json.Unmarshal(data, &ae) != nil || ae.Message == "" {
			return &api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("the gateway answered %s", resp.Status)}
		}
		return &ae
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// DoRaw sends body as is (contentType) and expects an empty 2xx answer.
func (c *Client) DoRaw(ctx context.Context, method, path, contentType string, body io.Reader) error {
	u := *c.base
	u.Path = path
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := c.http.Do(req)
	if err != nil {
		return explain(c.base.Host, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var ae api.Error
		if json.Unmarshal(data, &ae) != nil || ae.Message == "" {
			return &api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("the gateway answered %s", resp.Status)}
		}
		return &ae
	}
	return nil
}

// explain turns transport errors into one line a person can act on.
func explain(gateway string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	switch {
	case errors.Is(err, trust.ErrPinMismatch):
		return fmt.Errorf("the gateway at %s does not present the cluster you pinned (%w): check --ca-pin", gateway, err)
	case strings.Contains(err.Error(), "connection refused"):
		return fmt.Errorf("cannot reach the gateway at %s: connection refused (is tunnel-gateway running there?)", gateway)
	case strings.Contains(err.Error(), "no such host"):
		return fmt.Errorf("cannot reach the gateway at %s: unknown host", gateway)
	case strings.Contains(err.Error(), "timeout"), strings.Contains(err.Error(), "deadline exceeded"):
		return fmt.Errorf("the gateway at %s did not answer in time", gateway)
	}
	return fmt.Errorf("talk to the gateway at %s: %w", gateway, err)
}
