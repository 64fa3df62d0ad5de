package wire

import "log/slog"

// Database credentials the caller never sees: a service of an agent may
// name a Vault path (Service.Credentials); for each stream to it the
// gateway leases a credential there and hands it to the target agent with
// the stream's authorisation (Header.DBUser and DBPassword on a relayed
// stream, Control.DBUser and DBPassword in the MsgExpect of a direct
// one), over the mutual-TLS QUIC connection only. The agent logs in to
// its database with it and passes the session through.

// Secret is a value that is never printed: fmt and log/slog show
// "[redacted]". Its JSON and wire encodings are the value itself.
type Secret string

// String hides the value.
func (Secret) String() string { return "[redacted]" }

// GoString hides the value from %#v.
func (Secret) GoString() string { return `"[redacted]"` }

// LogValue hides the value from log/slog.
func (Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// Reveal returns the value, for the one place that uses it.
func (s Secret) Reveal() string { return string(s) }
