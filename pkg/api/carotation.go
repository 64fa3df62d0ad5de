package api

import "time"

// CA rotation (tunnel admin ca rotate; docs/CA-ROTATION.md). Admin only.
//
// GET PathAdminCARotation shows where each CA's rotation stands
// (CARotationStatus). POST PathAdminCARotation/{step} with a
// CARotationRequest runs one step for the kinds asked for: "start" adds
// a new key, trusted alongside the active one but not signing; "activate"
// makes the new key sign; "finish" removes the old key. Each step is safe
// to repeat: a kind already past it is left as it is and reported so.
// A step refused for a kind (activate before every agent has the new
// bundle, finish before every certificate of the old key has expired) is
// refused with CodeConflict naming the date it becomes safe, unless force.
const PathAdminCARotation = "/v1/admin/ca/rotation"

// Rotation steps (the {step} of POST PathAdminCARotation/{step}).
const (
	CARotateStart    = "start"
	CARotateActivate = "activate"
	CARotateFinish   = "finish"
)

// CA kinds; CAKindAll means the three.
const (
	CAKindX509    = "x509"
	CAKindSSHUser = "ssh-user"
	CAKindSSHHost = "ssh-host"
	CAKindAll     = "all"
)

// CARotationRequest is the body of a rotation step.
type CARotationRequest struct {
	// Kind is "x509", "ssh-user", "ssh-host" or "all" (also "").
	Kind string `json:"kind,omitempty"`
	// Force runs the step even when it is not safe yet (audited).
	Force bool `json:"force,omitempty"`
}

// CARotationStatus is where the rotation of each CA stands.
type CARotationStatus struct {
	Kinds []CAKindStatus `json:"kinds"`
	// Agents counts the agents connected to the gateway that answered,
	// and those of them that said they hold its current trust bundle
	// (its epoch or a newer one); nil when it does not know.
	Agents *CATrustHolders `json:"agents,omitempty"`
	// Done says, per kind, what a step did ("started", "already started",
	// ...); empty for GET.
	Done map[string]string `json:"done,omitempty"`
}

// CATrustHolders: of Connected agents, Current said they hold the
// gateway's current trust bundle; the others have not said so yet (an
// agent of an older version never does).
type CATrustHolders struct {
	Connected int    `json:"connected"`
	Current   int    `json:"current"`
	Epoch     uint64 `json:"epoch"`
}

// CAKindStatus is one CA's rotation.
type CAKindStatus struct {
	Kind string `json:"kind"`
	// Phase is "idle" (one key), "started" (a new key trusted, the old one
	// signs) or "activated" (the new key signs, the old one is trusted
	// until finish).
	Phase string `json:"phase"`
	// Active signs; New is the started key (phase started); Old are the
	// keys activate replaced (phase activated).
	Active CAKeyInfo   `json:"active"`
	New    *CAKeyInfo  `json:"new,omitempty"`
	Old    []CAKeyInfo `json:"old,omitempty"`
	// Waiting counts the agents' and users' X.509 certificates issued
	// before the start and still valid (phase started): connected agents
	// got the new trust bundle over their connection (not acknowledged, so
	// they are counted); the others, and users, get it at their next
	// renewal or login. WaitingUntil is
	// when the last of them expires.
	Waiting      int       `json:"waiting,omitempty"`
	WaitingUntil time.Time `json:"waiting_until,omitzero"`
	// ActivatedAt is when the new key began to sign (phase activated).
	ActivatedAt time.Time `json:"activated_at,omitzero"`
	// OldValid counts the certificates the old key signed that are still
	// valid, and OldExpire is when the last expires (phase activated):
	// finish is safe from then on.
	OldValid  int       `json:"old_valid,omitempty"`
	OldExpire time.Time `json:"old_expire,omitzero"`
	// Next says what to do next, in one sentence.
	Next string `json:"next"`
}

// CAKeyInfo describes one CA key.
type CAKeyInfo struct {
	// Fingerprint is the pin (sha256:HEX) of an X.509 CA, the SHA256
	// fingerprint ssh-keygen -l shows of an SSH CA.
	Fingerprint string    `json:"fingerprint"`
	CreatedAt   time.Time `json:"created_at"`
	// Public is the SSH CA's authorized_keys line, or the X.509 CA
	// certificate (PEM).
	Public string `json:"public"`
}
