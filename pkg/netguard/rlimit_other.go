//go:build !linux && !darwin

package netguard

// RaiseFileLimit does nothing on this system and reports the limit as
// unknown (0).
func RaiseFileLimit() (uint64, error) { return 0, nil }
