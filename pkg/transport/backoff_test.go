package transport

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name string
		b    Backoff
		// want is the base delay d of each attempt; Next returns a value
		// in [d/2, d].
		want []time.Duration
	}{
		{"grows to the cap", Backoff{Min: 100 * ms, Max: time.Second},
			[]time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second, time.Second}},
		{"zero value", Backoff{},
			[]time.Duration{250 * ms, 500 * ms, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second}},
		{"min only", Backoff{Min: time.Second},
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second}},
		{"max only", Backoff{Max: time.Second},
			[]time.Duration{250 * ms, 500 * ms, time.Second, time.Second}},
		{"min above max", Backoff{Min: time.Minute, Max: time.Second},
			[]time.Duration{time.Second, time.Second}},
	}
	for _, tt := range tests {
		for _, r := range []float64{0, 0.5, 0.999999} {
			b := tt.b
			b.Rand = func() float64 { return r }
			for i, d := range tt.want {
				got := b.Next()
				want := d/2 + time.Duration(r*float64(d/2))
				if got != want {
					t.Errorf("%s, rand %v: attempt %d: Next() = %v; want %v", tt.name, r, i, got, want)
				}
				if got < d/2 || got > d {
					t.Errorf("%s, rand %v: attempt %d: Next() = %v; want within [%v, %v]", tt.name, r, i, got, d/2, d)
				}
			}
			// Reset starts over.
			b.Reset()
			if got, want := b.Next(), tt.want[0]/2+time.Duration(r*float64(tt.want[0]/2)); got != want {
				t.Errorf("%s, rand %v: after Reset, Next() = %v; want %v", tt.name, r, got, want)
			}
		}
	}
}

// Many attempts never overflow past the cap, and the default source of
// randomness stays in range.
func TestBackoffLongRun(t *testing.T) {
	b := Backoff{Min: time.Millisecond, Max: time.Minute}
	for i := range 1000 {
		if got := b.Next(); got < time.Millisecond/2 || got > time.Minute {
			t.Fatalf("attempt %d: Next() = %v; want within [%v, %v]", i, got, time.Millisecond/2, time.Minute)
		}
	}
	for range 100 {
		if got := b.Next(); got < 30*time.Second {
			t.Fatalf("Next() after 1000 attempts = %v; want at least half the cap", got)
		}
	}
}
