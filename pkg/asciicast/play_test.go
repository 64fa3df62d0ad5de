package asciicast_test

import (
	"bytes"
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tunnelhq/tunnel/pkg/asciicast"
)

// playCast has a gap of 10 s with only input, a marker and a resize in it,
// and an unknown event type.
const playCast = `{"version": 2, "width": 80, "height": 24}
[0.5, "o", "$ "]
[1.0, "i", "s"]
[1.5, "o", "sleep 10\r\n"]
[6.5, "m", "idle"]
[11.5, "r", "100x30"]
[11.5, "o", "\u001b[32mdone\u001b[0m\r\n"]
[11.75, "x", "ignored"]
[12.0, "o", "é"]
[12.0, "o", "!"]
`

const playOutput = "$ sleep 10\r\n\x1b[32mdone\x1b[0m\r\né!"

// fakeSleep records the waits Play asks for without waiting.
type fakeSleep struct{ waits []time.Duration }

func (f *fakeSleep) sleep(ctx context.Context, d time.Duration) error {
	f.waits = append(f.waits, d)
	return ctx.Err()
}

func TestPlay(t *testing.T) {
	tests := []struct {
		name    string
		speed   float64
		maxIdle time.Duration
		want    []time.Duration
	}{
		{"recorded speed", 1, 0, []time.Duration{500 * ms, time.Second, 10 * time.Second, 500 * ms}},
		{"twice as fast", 2, 0, []time.Duration{250 * ms, 500 * ms, 5 * time.Second, 250 * ms}},
		{"half speed", 0.5, 0, []time.Duration{time.Second, 2 * time.Second, 20 * time.Second, time.Second}},
		// Each gap between events is capped: 0.5, 0.5+0.5, 2+2+0 (marker,
		// resize, output), 0.25+0.25.
		{"idle capped", 1, 2 * time.Second, []time.Duration{500 * ms, time.Second, 4 * time.Second, 500 * ms}},
		{"idle capped and fast", 2, 2 * time.Second, []time.Duration{250 * ms, 500 * ms, 2 * time.Second, 250 * ms}},
		{"idle cap above every gap", 1, time.Minute, []time.Duration{500 * ms, time.Second, 10 * time.Second, 500 * ms}},
		{"no waiting", math.Inf(1), 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			var f fakeSleep
			if err := asciicast.Play(t.Context(), strings.NewReader(playCast), &out, tt.speed, tt.maxIdle, f.sleep); err != nil {
				t.Fatalf("Play: %v", err)
			}
			if diff := cmp.Diff(tt.want, f.waits); diff != "" {
				t.Errorf("waits (-want +got):\n%s", diff)
			}
			if got := out.String(); got != playOutput {
				t.Errorf("output %q; want %q", got, playOutput)
			}
		})
	}
}

// TestPlayNoDrift checks that waits add up to the recording's length even
// when each one rounds.
func TestPlayNoDrift(t *testing.T) {
	var buf bytes.Buffer
	w, err := asciicast.NewWriter(&buf, asciicast.Header{Width: 80, Height: 24})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 1000; i++ {
		if err := w.Output(time.Duration(i)*1001*time.Microsecond, []byte(".")); err != nil {
			t.Fatal(err)
		}
	}
	var f fakeSleep
	if err := asciicast.Play(t.Context(), &buf, &bytes.Buffer{}, 3, 0, f.sleep); err != nil {
		t.Fatal(err)
	}
	var total time.Duration
	for _, d := range f.waits {
		total += d
	}
	if want := time.Duration(math.Round(float64(1001*time.Millisecond) / 3)); total != want {
		t.Errorf("waits add up to %v; want %v", total, want)
	}
}

func TestPlayCancel(t *testing.T) {
	cause := errors.New("session expired")
	ctx, cancel := context.WithCancelCause(t.Context())
	var out bytes.Buffer
	sleep := func(ctx context.Context, d time.Duration) error {
		if out.Len() > 0 {
			cancel(cause)
		}
		return nil // ignores ctx: Play must still stop
	}
	err := asciicast.Play(ctx, strings.NewReader(playCast), &out, 1, 0, sleep)
	if !errors.Is(err, cause) {
		t.Errorf("Play returned %v; want the cause %v", err, cause)
	}
	if got, want := out.String(), "$ sleep 10\r\n"; got != want {
		t.Errorf("output %q; want %q", got, want)
	}

	// The default sleep returns when ctx is done.
	ctx, cancel = context.WithCancelCause(t.Context())
	cancel(cause)
	start := time.Now()
	err = asciicast.Play(ctx, strings.NewReader(playCast), &out, 1, 0, nil)
	if !errors.Is(err, cause) || time.Since(start) > 5*time.Second {
		t.Errorf("Play with a cancelled context returned %v after %v; want %v at once", err, time.Since(start), cause)
	}
}

func TestPlayRealSleep(t *testing.T) {
	in := hdr + `[0.01, "o", "a"]` + "\n" + `[0.02, "o", "b"]` + "\n"
	var out bytes.Buffer
	start := time.Now()
	if err := asciicast.Play(t.Context(), strings.NewReader(in), &out, 1, 0, nil); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 20*ms {
		t.Errorf("played in %v; want at least 20ms", d)
	}
	if out.String() != "ab" {
		t.Errorf("output %q; want %q", out.String(), "ab")
	}
}

type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errDiskFull }

func TestPlayErrors(t *testing.T) {
	noSleep := func(context.Context, time.Duration) error { return nil }
	for _, speed := range []float64{0, -1, math.NaN(), math.Inf(-1)} {
		if err := asciicast.Play(t.Context(), strings.NewReader(playCast), &bytes.Buffer{}, speed, 0, noSleep); err == nil {
			t.Errorf("Play at speed %v succeeded; want an error", speed)
		}
	}
	if err := asciicast.Play(t.Context(), strings.NewReader(playCast), errWriter{}, 1, 0, noSleep); !errors.Is(err, errDiskFull) {
		t.Errorf("Play to a failing writer: got %v; want %v", err, errDiskFull)
	}
	if err := asciicast.Play(t.Context(), strings.NewReader(`{"version": 1}`), &bytes.Buffer{}, 1, 0, noSleep); !errors.Is(err, asciicast.ErrUnsupportedVersion) {
		t.Errorf("Play of a version 1 header: got %v; want %v", err, asciicast.ErrUnsupportedVersion)
	}
	sleepErr := errors.New("sleep failed")
	failSleep := func(context.Context, time.Duration) error { return sleepErr }
	if err := asciicast.Play(t.Context(), strings.NewReader(playCast), &bytes.Buffer{}, 1, 0, failSleep); !errors.Is(err, sleepErr) {
		t.Errorf("Play with a failing sleep: got %v; want %v", err, sleepErr)
	}

	// Output before a bad line reaches the writer.
	var out bytes.Buffer
	in := hdr + `[1, "o", "before"]` + "\n" + `[2, "o", "cut sh`
	err := asciicast.Play(t.Context(), strings.NewReader(in), &out, 1, 0, noSleep)
	if err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("Play of a recording cut short: got %v; want an error on line 3", err)
	}
	if out.String() != "before" {
		t.Errorf("output %q; want %q", out.String(), "before")
	}
}
