package apiclient

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/tunnelhq/tunnel/pkg/api"
)

// Just-in-time access requests (api.PathRequests).

// CreateRequest asks for a role for a while.
func (c *Client) CreateRequest(ctx context.Context, in api.CreateAccessRequest) (api.AccessRequest, error) {
	var out api.AccessRequest
	err := c.Do(ctx, http.MethodPost, api.PathRequests, nil, in, &out)
	return out, err
}

// ListRequests lists the caller's own requests and those awaiting their
// decision; all lists every request they may see. state, if not "",
// selects one state.
func (c *Client) ListRequests(ctx context.Context, all bool, state string) ([]api.AccessRequest, error) {
	q := url.Values{}
	if all {
		q.Set(api.RequestsQueryAll, "1")
	}
	if state != "" {
		q.Set(api.RequestsQueryState, state)
	}
	var out []api.AccessRequest
	err := c.Do(ctx, http.MethodGet, api.PathRequests, q, nil, &out)
	return out, err
}

// GetRequest returns the request id.
func (c *Client) GetRequest(ctx context.Context, id string) (api.AccessRequest, error) {
	var out api.AccessRequest
	err := c.Do(ctx, http.MethodGet, api.RequestPath(id), nil, nil, &out)
	return out, err
}

// ApproveRequest, DenyRequest and RevokeRequest decide or end the request
// id with a comment.
func (c *Client) ApproveRequest(ctx context.Context, id, comment string) (api.AccessRequest, error) {
	return c.requestAction(ctx, id, "approve", comment)
}

// DenyRequest denies the request id; comment is required.
func (c *Client) DenyRequest(ctx context.Context, id, comment string) (api.AccessRequest, error) {
	return c.requestAction(ctx, id, "deny", comment)
}

// RevokeRequest ends the approved request id before its window ends.
func (c *Client) RevokeRequest(ctx context.Context, id, comment string) (api.AccessRequest, error) {
	return c.requestAction(ctx, id, "revoke", comment)
}

func (c *Client) requestAction(ctx context.Context, id, action, comment string) (api.AccessRequest, error) {
	var out api.AccessRequest
	err := c.Do(ctx, http.MethodPost, api.RequestActionPath(id, action), nil, api.RequestDecision{Comment: comment}, &out)
	return out, err
}

// waitPoll is one long poll: under the client's 30 s request timeout.
const waitPoll = 25 * time.Second

// WaitRequest returns the request id once it is no longer pending, or its
// state when ctx ends (with ctx's error). It long-polls the gateway and,
// when a poll fails on the way (a gateway restarting, a network blip),
// polls again after a pause; an answer from the gateway that refuses (the
// request is unknown, the login expired) ends the wait with that error.
func (c *Client) WaitRequest(ctx context.Context, id string) (api.AccessRequest, error) {
	var last api.AccessRequest
	pause := 500 * time.Millisecond
	for {
		var out api.AccessRequest
		q := url.Values{api.WaitQueryTimeout: {waitPoll.String()}}
		err := c.Do(ctx, http.MethodGet, api.RequestWaitPath(id), q, nil, &out)
		var ae *api.Error
		switch {
		case ctx.Err() != nil:
			return last, ctx.Err()
		case err == nil:
			last, pause = out, 500*time.Millisecond
			if out.State != api.RequestPending {
				return out, nil
			}
			continue
		case errors.As(err, &ae) && ae.Code != api.CodeStoreUnavailable:
			return last, err
		}
		select {
		case <-ctx.Done():
			return last, ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 10*time.Second)
	}
}
