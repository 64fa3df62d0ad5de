package auth

import (
	"testing"
	"time"
)

func TestLockoutPolicyWithDefaults(t *testing.T) {
	tests := []struct {
		in, want LockoutPolicy
	}{
		{LockoutPolicy{}, LockoutPolicy{MaxFailures: 5, LockoutFor: 15 * time.Minute}},
		{LockoutPolicy{MaxFailures: 3}, LockoutPolicy{MaxFailures: 3, LockoutFor: 15 * time.Minute}},
		{LockoutPolicy{LockoutFor: time.Hour}, LockoutPolicy{MaxFailures: 5, LockoutFor: time.Hour}},
		{LockoutPolicy{MaxFailures: -1, LockoutFor: -time.Second}, LockoutPolicy{MaxFailures: 5, LockoutFor: 15 * time.Minute}},
		{LockoutPolicy{MaxFailures: 10, LockoutFor: time.Minute}, LockoutPolicy{MaxFailures: 10, LockoutFor: time.Minute}},
	}
	for _, tc := range tests {
		if got := tc.in.WithDefaults(); got != tc.want {
			t.Errorf("%+v.WithDefaults() = %+v; want %+v", tc.in, got, tc.want)
		}
	}
}
