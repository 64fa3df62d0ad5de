package asciicast_test

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/tunnelhq/tunnel/pkg/asciicast"
)

const hdr = `{"version": 2, "width": 80, "height": 24}` + "\n"

func TestReaderRejects(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string // in the error
	}{
		{"empty file", "", "no header"},
		{"empty header line", "\n", "line 1: empty line"},
		{"header not JSON", "hello\n", "line 1: header: not a JSON object"},
		{"header array", `[2, 80, 24]` + "\n", "not a JSON object"},
		{"header null", "null\n", "not a JSON object"},
		{"header trailing data", `{"version": 2, "width": 80, "height": 24} {}` + "\n", "line 1: header"},
		{"no version", `{"width": 80, "height": 24}` + "\n", "no version"},
		{"version 1", `{"version": 1, "width": 80, "height": 24}` + "\n", "version 1"},
		{"version 3", `{"version": 3, "term": {"cols": 80, "rows": 24}}` + "\n", "version 3"},
		{"version string", `{"version": "2", "width": 80, "height": 24}` + "\n", "line 1: header"},
		{"version float", `{"version": 2.5, "width": 80, "height": 24}` + "\n", "line 1: header"},
		{"no width", `{"version": 2, "height": 24}` + "\n", "no width"},
		{"no height", `{"version": 2, "width": 80}` + "\n", "no height"},
		{"zero width", `{"version": 2, "width": 0, "height": 24}` + "\n", "width 0 out of range"},
		{"huge height", `{"version": 2, "width": 80, "height": 70000}` + "\n", "height 70000 out of range"},
		{"env not strings", `{"version": 2, "width": 80, "height": 24, "env": {"TERM": 1}}` + "\n", "line 1: header"},
		{"header too long", `{"version": 2, "width": 80, "height": 24, "title": "` + strings.Repeat("t", asciicast.MaxLineSize) + "\"}\n", "line 1: longer than"},

		{"event not JSON", hdr + "[1, o, x]\n", "line 2: event"},
		{"event object", hdr + `{"time": 1}` + "\n", "line 2: event"},
		{"event null", hdr + "null\n", "line 2: event of 0 elements"},
		{"two elements", hdr + `[1, "o"]` + "\n", "event of 2 elements"},
		{"four elements", hdr + `[1, "o", "x", "y"]` + "\n", "event of 4 elements"},
		{"time null", hdr + `[null, "o", "x"]` + "\n", "time is not a number"},
		{"time string", hdr + `["1", "o", "x"]` + "\n", "time is not a number"},
		{"time overflows", hdr + `[1e400, "o", "x"]` + "\n", "event time"},
		{"time negative", hdr + `[-0.5, "o", "x"]` + "\n", "negative event time"},
		{"time too late", hdr + `[1e10, "o", "x"]` + "\n", "later than"},
		{"time backwards", hdr + `[2, "o", "x"]` + "\n" + `[1.999999, "o", "y"]` + "\n", "line 3: event time 1.999999 before the previous event's, 2"},
		{"type null", hdr + `[1, null, "x"]` + "\n", "event type is not a string"},
		{"type number", hdr + `[1, 1, "x"]` + "\n", "event type is not a string"},
		{"type empty", hdr + `[1, "", "x"]` + "\n", "empty type"},
		{"data null", hdr + `[1, "o", null]` + "\n", "event data is not a string"},
		{"data array", hdr + `[1, "o", ["x"]]` + "\n", "event data is not a string"},
		{"data bad escape", hdr + `[1, "o", "\x"]` + "\n", "event"},
		{"data raw control", hdr + "[1, \"o\", \"a\tb\"]\n", "event"},
		{"trailing data", hdr + `[1, "o", "x"] [2, "o", "y"]` + "\n", "line 2: event"},
		{"trailing comma", hdr + `[1, "o", "x",]` + "\n", "line 2: event"},
		{"resize without x", hdr + `[1, "r", "80"]` + "\n", `resize "80"`},
		{"resize zero", hdr + `[1, "r", "0x24"]` + "\n", "width"},
		{"resize signed", hdr + `[1, "r", "+80x24"]` + "\n", "width"},
		{"resize spaces", hdr + `[1, "r", "80 x 24"]` + "\n", "width"},
		{"resize huge", hdr + `[1, "r", "80x99999999999999999999"]` + "\n", "height"},
		{"blank line", hdr + `[1, "o", "x"]` + "\n\n" + `[2, "o", "y"]` + "\n", "line 3: empty line"},
		{"cut short", hdr + `[1, "o", "x"]` + "\n" + `[2, "o", "y`, "line 3: event"},
		{"line too long", hdr + `[1, "o", "` + strings.Repeat("x", asciicast.MaxLineSize) + `"]` + "\n", "line 2: longer than 1048576 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := readErr(tt.in)
			if err == nil {
				t.Fatalf("read %q without error; want one containing %q", tt.in, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got error %q; want one containing %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "asciicast: ") {
				t.Errorf("error %q does not start with the package name", err)
			}
		})
	}
}

// readErr reads a whole recording and returns the error that ended it, or
// nil at io.EOF.
func readErr(in string) error {
	r, err := asciicast.NewReader(strings.NewReader(in))
	if err != nil {
		return err
	}
	for {
		_, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func TestReaderVersionError(t *testing.T) {
	_, err := asciicast.NewReader(strings.NewReader(`{"version": 3, "term": {"cols": 80, "rows": 24}}` + "\n"))
	if !errors.Is(err, asciicast.ErrUnsupportedVersion) {
		t.Errorf("got %v; want %v", err, asciicast.ErrUnsupportedVersion)
	}
}

func TestReaderAccepts(t *testing.T) {
	in := `{"version": 2, "width": 80, "height": 24, "duration": 5.5, "idle_time_limit": 2, "command": "/bin/bash", "theme": {"fg": "#d0d0d0"}, "future": [1, 2]}` + "\r\n" +
		`[0, "o", "a"]` + "\r\n" + // CRLF line endings
		`[0, "i", "b"]` + "\n" + // equal times
		`  [ 1.5 , "x" , "future event" ]  ` + "\n" + // unknown type, spaces
		`[2e0, "r", "65535x1"]` + "\n" + // exponent
		`[2.0000004, "o", "\ud83d\ude00 \ud800 ` + "\xff" + `"]` + "\n" + // surrogates; invalid UTF-8
		`[3, "m", ""]` // no final newline
	h, evs := readAll(t, []byte(in))
	if diff := cmp.Diff(asciicast.Header{Version: 2, Width: 80, Height: 24}, h); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	want := []asciicast.Event{
		{0, "o", "a"},
		{0, "i", "b"},
		{1500 * ms, "x", "future event"},
		{2 * time.Second, "r", "65535x1"},
		{2 * time.Second, "o", "😀 \uFFFD \uFFFD"},
		{3 * time.Second, "m", ""},
	}
	if diff := cmp.Diff(want, evs); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestReaderStickyError(t *testing.T) {
	r, err := asciicast.NewReader(strings.NewReader(hdr + "bad\n" + `[1, "o", "x"]` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err1 := r.Next()
	_, err2 := r.Next()
	if err1 == nil || err2 != err1 {
		t.Errorf("Next returned %v, then %v; want the same error twice", err1, err2)
	}
}

func TestReaderLongestLine(t *testing.T) {
	prefix, suffix := `[1, "o", "`, `"]`
	line := prefix + strings.Repeat("x", asciicast.MaxLineSize-len(prefix)-len(suffix)) + suffix
	if err := readErr(hdr + line + "\n"); err != nil {
		t.Errorf("line of exactly MaxLineSize bytes: %v", err)
	}
	if err := readErr(hdr + line); err != nil {
		t.Errorf("last line of exactly MaxLineSize bytes, no newline: %v", err)
	}
	line = prefix + "x" + line[len(prefix):]
	for _, end := range []string{"\n", ""} {
		if err := readErr(hdr + line + end); err == nil || !strings.Contains(err.Error(), "longer than") {
			t.Errorf("line of MaxLineSize+1 bytes ending %q: got %v; want it too long", end, err)
		}
	}
}

func TestParseResize(t *testing.T) {
	tests := []struct {
		in   string
		w, h int
		ok   bool
	}{
		{"80x24", 80, 24, true},
		{"1x1", 1, 1, true},
		{"65535x65535", 65535, 65535, true},
		{"080x024", 80, 24, true},
		{"", 0, 0, false},
		{"80", 0, 0, false},
		{"80X24", 0, 0, false},
		{"x24", 0, 0, false},
		{"80x", 0, 0, false},
		{"0x24", 0, 0, false},
		{"65536x24", 0, 0, false},
		{"-1x24", 0, 0, false},
		{"80x24x1", 0, 0, false},
		{" 80x24", 0, 0, false},
		{"８０x24", 0, 0, false},
	}
	for _, tt := range tests {
		w, h, err := asciicast.ParseResize(tt.in)
		if (err == nil) != tt.ok || w != tt.w || h != tt.h {
			t.Errorf("ParseResize(%q) = %d, %d, %v; want %d, %d, ok %v", tt.in, w, h, err, tt.w, tt.h, tt.ok)
		}
	}
}
