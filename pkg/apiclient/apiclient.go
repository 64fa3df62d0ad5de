// Package apiclient calls the gateway's HTTPS API (pkg/api) from the
// engineer's machine and from agents. Given several gateways (one store
// behind them) it fails over from one to the next under one rule,
// [Retryable]. The gateway is authenticated by the CA pin only
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
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

// Client talks to a gateway, or to several that share one store: each
// request goes to the gateway that answered last, and fails over to the
// next one in the list under the rule of [Retryable].
type Client struct {
	gws []gateway
	mu  sync.Mutex // guards pref
	// pref is the gateway tried first: the last one that answered.
	pref int
}

// gateway is one gateway's address and its HTTP client (each has its own
// TLS server name).
type gateway struct {
	base *url.URL
	http *http.Client
}

// Config says how to reach a gateway.
type Config struct {
	// Gateway is HOST:PORT, or several separated by commas (gateways that
	// share one store), tried in that order.
	Gateway string
	// Pin is the CA pin (sha256:HEX).
	Pin string
	// Cert, if set, is presented for mutual TLS.
	Cert *tls.Certificate
	// Timeout bounds each request; zero means 30 s.
	Timeout time.Duration
}

// SplitGateways splits a comma-separated list of HOST:PORT addresses,
// dropping blanks and repeats, and checks each.
func SplitGateways(list string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, g := range strings.Split(list, ",") {
		g = strings.TrimSpace(g)
		if g == "" || seen[g] {
			continue
		}
		if _, _, err := net.SplitHostPort(g); err != nil {
			return nil, fmt.Errorf("gateway address %q must be HOST:PORT (for example gw.example.com:8443)", g)
		}
		seen[g] = true
		out = append(out, g)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no gateway address: give HOST:PORT (several separated by commas)")
	}
	return out, nil
}

// New returns a client for cfg.
func New(cfg Config) (*Client, error) {
	addrs, err := SplitGateways(cfg.Gateway)
	if err != nil {
		return nil, err
	}
	pin, err := trust.ParsePin(cfg.Pin)
	if err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	c := &Client{}
	for _, addr := range addrs {
		host, _, _ := net.SplitHostPort(addr)
		tlsCfg := trust.PinnedClientConfig(pin, host, nil)
		if cfg.Cert != nil {
			cert := *cfg.Cert
			tlsCfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
		}
		tr := &http.Transport{
			TLSClientConfig:     tlsCfg,
			ForceAttemptHTTP2:   true,
			TLSHandshakeTimeout: 10 * time.Second,
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
			Proxy:               http.ProxyFromEnvironment,
		}
		c.gws = append(c.gws, gateway{
			base: &url.URL{Scheme: "https", Host: addr},
			http: &http.Client{Transport: tr, Timeout: cfg.Timeout},
		})
	}
	return c, nil
}

// Close releases idle connections.
func (c *Client) Close() {
	for _, g := range c.gws {
		g.http.CloseIdleConnections()
	}
}

// Gateways returns the gateways' addresses, in the order given.
func (c *Client) Gateways() []string {
	out := make([]string, len(c.gws))
	for i, g := range c.gws {
		out[i] = g.base.Host
	}
	return out
}

// Retryable reports whether a request that failed on one gateway may be
// sent to the next one. sent says whether the request's headers reached
// the wire; status is the HTTP status of the answer (0 without one).
//
//   - Not sent (connection refused, no route, DNS, TLS handshake, dial
//     timeout): always; the gateway never saw it.
//   - 503 (the gateway cannot reach its store, or is shutting down):
//     always; it decided nothing.
//   - Sent, then no answer (timeout, reset): only for idempotent methods.
//     A login (POST) that reached a gateway is never repeated elsewhere:
//     its TOTP code may have been consumed there.
//   - Any other answer, refusals included, is final.
func Retryable(method string, sent bool, status int) bool {
	switch {
	case status == http.StatusServiceUnavailable:
		return true
	case status != 0:
		return false
	case !sent:
		return true
	}
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	return false
}

// attempt is the outcome of one request to one gateway.
type attempt struct {
	resp *http.Response
	sent bool
	err  error
}

// send sends the request made by mk to each gateway in turn, from the
// preferred one, until one answers with something final. The caller
// closes the response's body.
func (c *Client) send(ctx context.Context, method string, mk func(ctx context.Context, base *url.URL) (*http.Request, error)) (*http.Response, error) {
	c.mu.Lock()
	first := c.pref
	c.mu.Unlock()
	var errs []error
	for k := range c.gws {
		i := (first + k) % len(c.gws)
		g := c.gws[i]
		var sent atomic.Bool
		tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: func() { sent.Store(true) }})
		req, err := mk(tctx, g.base)
		if err != nil {
			return nil, err
		}
		resp, err := g.http.Do(req)
		status := 0
		if err == nil {
			status = resp.StatusCode
		}
		last := k == len(c.gws)-1
		if ctx.Err() != nil || last || !Retryable(method, sent.Load(), status) {
			if err != nil {
				if len(errs) > 0 {
					return nil, errors.Join(append(errs, explain(g.base.Host, err))...)
				}
				return nil, explain(g.base.Host, err)
			}
			if status != http.StatusServiceUnavailable {
				c.mu.Lock()
				c.pref = i
				c.mu.Unlock()
			}
			return resp, nil
		}
		if err != nil {
			errs = append(errs, explain(g.base.Host, err))
		} else {
			data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			errs = append(errs, fmt.Errorf("the gateway at %s: %w", g.base.Host, apiError(resp, data)))
		}
	}
	return nil, errors.Join(errs...) // not reached: the last gateway returns above
}

// Do sends in (if not nil) as JSON and decodes the answer into out (if not
// nil). A non-2xx answer is returned as *api.Error.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = b
	}
	resp, err := c.send(ctx, method, func(ctx context.Context, base *url.URL) (*http.Request, error) {
		u := *base
		u.Path = path
		u.RawQuery = query.Encode()
		var r io.Reader
		if in != nil {
			r = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, u.String(), r)
		if err != nil {
			return nil, err
		}
		if in != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Header.Set("Accept", "application/json")
		return req, nil
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read answer from the gateway: %w", err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return apiError(resp, data)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("the gateway's answer is not understood (%v): is the client older than the gateway?", err)
	}
	return nil
}

// apiError decodes a non-2xx answer.
func apiError(resp *http.Response, data []byte) error {
	var ae api.Error
	if json.Unmarshal(data, &ae) != nil || ae.Message == "" {
		return &api.Error{Code: api.CodeInternal, Message: fmt.Sprintf("the gateway answered %s", resp.Status)}
	}
	return &ae
}

// DoInto sends a request without a body and copies a 2xx answer's body,
// whatever its type, to w.
func (c *Client) DoInto(ctx context.Context, method, path string, w io.Writer) error {
	resp, err := c.send(ctx, method, func(ctx context.Context, base *url.URL) (*http.Request, error) {
		u := *base
		u.Path = path
		return http.NewRequestWithContext(ctx, method, u.String(), nil)
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return apiError(resp, data)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// DoRaw sends body as is (contentType) and expects an empty 2xx answer.
// With several gateways the body is read into memory first (unless it is
// an io.ReadSeeker) so that it can be sent again to the next one.
func (c *Client) DoRaw(ctx context.Context, method, path, contentType string, body io.Reader) error {
	rs, ok := body.(io.ReadSeeker)
	if !ok && body != nil && len(c.gws) > 1 {
		b, err := io.ReadAll(body)
		if err != nil {
			return err
		}
		rs = bytes.NewReader(b)
	}
	resp, err := c.send(ctx, method, func(ctx context.Context, base *url.URL) (*http.Request, error) {
		u := *base
		u.Path = path
		r := body
		if rs != nil {
			if _, err := rs.Seek(0, io.SeekStart); err != nil {
				return nil, err
			}
			r = rs
		}
		req, err := http.NewRequestWithContext(ctx, method, u.String(), r)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", contentType)
		return req, nil
	})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return apiError(resp, data)
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
		return fmt.Errorf("the gateway at %s is not of the cluster you pinned: check the --ca-pin you were given, or that --gateway is the right address (%w)", gateway, trust.ErrPinMismatch)
	case strings.Contains(err.Error(), "connection refused"):
		return fmt.Errorf("cannot reach the gateway at %s: connection refused (is tunnel-gateway running there?)", gateway)
	case strings.Contains(err.Error(), "no such host"):
		return fmt.Errorf("cannot reach the gateway at %s: unknown host", gateway)
	case strings.Contains(err.Error(), "timeout"), strings.Contains(err.Error(), "deadline exceeded"):
		return fmt.Errorf("the gateway at %s did not answer in time", gateway)
	}
	return fmt.Errorf("talk to the gateway at %s: %w", gateway, err)
}
