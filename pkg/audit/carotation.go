package audit

// Event types of a CA rotation (docs/CA-ROTATION.md). Subject is the kind
// of CA ("x509", "ssh-user", "ssh-host"); Details carry the fingerprints.
const (
	// CARotationStarted: a new CA key was added, trusted but not signing.
	CARotationStarted Type = "ca.rotation_started"
	// CARotationActivated: the new CA key signs from now on.
	CARotationActivated Type = "ca.rotation_activated"
	// CARotationFinished: the old CA key was removed; what it signed is
	// refused from now on. Details "forced" is "true" when it was removed
	// before every certificate it signed had expired.
	CARotationFinished Type = "ca.rotation_finished"
)
