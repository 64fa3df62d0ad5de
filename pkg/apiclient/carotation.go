package apiclient

import (
	"context"
	"net/http"

	"github.com/tunnelhq/tunnel/pkg/api"
)

// CA rotation (api.PathAdminCARotation).

// CARotationStatus returns where the rotation of each CA stands.
func (c *Client) CARotationStatus(ctx context.Context) (api.CARotationStatus, error) {
	var out api.CARotationStatus
	err := c.Do(ctx, http.MethodGet, api.PathAdminCARotation, nil, nil, &out)
	return out, err
}

// CARotate runs one step of the rotation (api.CARotateStart, Activate,
// Finish) for the kinds in.Kind names.
func (c *Client) CARotate(ctx context.Context, step string, in api.CARotationRequest) (api.CARotationStatus, error) {
	var out api.CARotationStatus
	err := c.Do(ctx, http.MethodPost, api.PathAdminCARotation+"/"+step, nil, in, &out)
	return out, err
}
