package asciicast_test

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/tunnelhq/tunnel/pkg/asciicast"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const ms = time.Millisecond

var testHeader = asciicast.Header{
	Width:     80,
	Height:    24,
	Timestamp: 1700000000,
	Title:     "alice@db-1 <prod> & co",
	Env:       map[string]string{"TERM": "xterm-256color", "SHELL": "/bin/bash"},
}

// readAll reads a whole recording.
func readAll(t *testing.T, b []byte) (asciicast.Header, []asciicast.Event) {
	t.Helper()
	r, err := asciicast.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("NewReader: %v\n%s", err, b)
	}
	var evs []asciicast.Event
	for {
		e, err := r.Next()
		if err == io.EOF {
			return r.Header(), evs
		}
		if err != nil {
			t.Fatalf("Next: %v\n%s", err, b)
		}
		evs = append(evs, e)
	}
}

func newWriter(t *testing.T) (*asciicast.Writer, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	w, err := asciicast.NewWriter(&buf, testHeader)
	if err != nil {
		t.Fatalf("NewWriter: %v", err)
	}
	return w, &buf
}

// TestGolden pins the encoding of a session that uses every kind of event,
// and reads it back.
func TestGolden(t *testing.T) {
	w, buf := newWriter(t)
	steps := []func() error{
		func() error { return w.Output(100*ms, []byte("\x1b[1;32malice@db-1\x1b[0m:~$ ")) },
		func() error { return w.Input(500*ms, []byte("l")) },
		func() error { return w.Input(600*ms, []byte("s")) },
		func() error { return w.Input(700*ms, []byte("\r")) },
		func() error { return w.Output(710*ms, []byte("ls\r\n")) },
		// "café ✓ 😀" split inside each multi-byte sequence.
		func() error { return w.Output(800*ms, []byte("caf\xc3")) },
		func() error { return w.Output(900*ms, []byte("\xa9 \xe2\x9c")) },
		func() error { return w.Output(time.Second, []byte("\x93 \xf0\x9f\x98\x80\r\n")) },
		func() error { return w.Output(1200*ms, []byte("bad \xff\xfe bytes\r\n")) },
		func() error { return w.Resize(2*time.Second, 120, 40) },
		func() error { return w.Marker(2500*ms, "chapter 2") },
		func() error {
			return w.Output(3*time.Second+1234567, []byte("\"quoted\" \\ tab\t del\x7f bell\a <b>&</b> \u2028"))
		},
		func() error {
			return w.WriteEvent(asciicast.Event{Time: 4 * time.Second, Type: "x", Data: "extension"})
		},
		w.Close,
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}

	golden := filepath.Join("testdata", "session.cast")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), buf.String()); diff != "" {
		t.Errorf("recording differs from %s (-want +got):\n%s", golden, diff)
	}

	h, evs := readAll(t, buf.Bytes())
	wantHeader := testHeader
	wantHeader.Version = 2
	if diff := cmp.Diff(wantHeader, h); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	wantEvents := []asciicast.Event{
		{100 * ms, "o", "\x1b[1;32malice@db-1\x1b[0m:~$ "},
		{500 * ms, "i", "l"},
		{600 * ms, "i", "s"},
		{700 * ms, "i", "\r"},
		{710 * ms, "o", "ls\r\n"},
		{800 * ms, "o", "caf"},
		{900 * ms, "o", "é "},
		{time.Second, "o", "✓ 😀\r\n"},
		{1200 * ms, "o", "bad \uFFFD\uFFFD bytes\r\n"},
		{2 * time.Second, "r", "120x40"},
		{2500 * ms, "m", "chapter 2"},
		{3*time.Second + 1235*time.Microsecond, "o", "\"quoted\" \\ tab\t del\x7f bell\a <b>&</b> \u2028"},
		{4 * time.Second, "x", "extension"},
	}
	if diff := cmp.Diff(wantEvents, evs); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

// TestSpecExample reads the example recording of the asciicast v2 spec,
// copied by hand, and checks that the Writer writes its events the same way.
func TestSpecExample(t *testing.T) {
	spec, err := os.ReadFile(filepath.Join("testdata", "spec.cast"))
	if err != nil {
		t.Fatal(err)
	}
	h, evs := readAll(t, spec)
	wantHeader := asciicast.Header{
		Version: 2, Width: 80, Height: 24, Timestamp: 1504467315, Title: "Demo",
		Env: map[string]string{"TERM": "xterm-256color", "SHELL": "/bin/zsh"},
	}
	if diff := cmp.Diff(wantHeader, h); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	us := time.Microsecond
	wantEvents := []asciicast.Event{
		{248848 * us, "o", "\x1b[1;31mHello \x1b[32mWorld!\x1b[0m\n"},
		{1001376 * us, "o", "That was ok\rThis is better."},
		{1500000 * us, "m", ""},
		{2143733 * us, "o", "Now... "},
		{4050000 * us, "r", "80x24"},
		{6541828 * us, "o", "Bye!"},
	}
	if diff := cmp.Diff(wantEvents, evs); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}

	// Our header is compact JSON, but every event line is as in the spec.
	var buf bytes.Buffer
	w, err := asciicast.NewWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if err := w.WriteEvent(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_, wantLines, _ := strings.Cut(string(spec), "\n")
	_, gotLines, _ := strings.Cut(buf.String(), "\n")
	if diff := cmp.Diff(wantLines, gotLines); diff != "" {
		t.Errorf("event lines differ from the spec's (-want +got):\n%s", diff)
	}
}

// TestOutputSplitUTF8 writes text with sequences of every length split at
// every byte, and byte by byte, and reads the same text back.
func TestOutputSplitUTF8(t *testing.T) {
	const text = "a é € 😀 z"
	for i := 0; i <= len(text); i++ {
		w, buf := newWriter(t)
		if err := w.Output(0, []byte(text[:i])); err != nil {
			t.Fatal(err)
		}
		if err := w.Output(ms, []byte(text[i:])); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if got := joinData(t, buf.Bytes(), "o"); got != text {
			t.Errorf("split at %d: got %q; want %q", i, got, text)
		}
	}

	w, buf := newWriter(t)
	for i := range len(text) {
		if err := w.Output(time.Duration(i)*ms, []byte{text[i]}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := joinData(t, buf.Bytes(), "o"); got != text {
		t.Errorf("byte by byte: got %q; want %q", got, text)
	}
}

// joinData returns the data of the events of type typ, joined.
func joinData(t *testing.T, b []byte, typ string) string {
	t.Helper()
	_, evs := readAll(t, b)
	var s strings.Builder
	for _, e := range evs {
		if e.Type == typ {
			s.WriteString(e.Data)
		}
	}
	return s.String()
}

func TestOutputInvalidUTF8(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   string
	}{
		{"invalid bytes", []string{"a\xffb\xfe"}, "a\uFFFDb\uFFFD"},
		{"lone continuation bytes", []string{"\x80\xbf"}, "\uFFFD\uFFFD"},
		{"encoded surrogate", []string{"\xed\xa0\x80"}, "\uFFFD\uFFFD\uFFFD"},
		{"overlong encoding", []string{"\xc0\xaf"}, "\uFFFD\uFFFD"},
		{"beyond U+10FFFF", []string{"\xf4\x90\x80\x80"}, "\uFFFD\uFFFD\uFFFD\uFFFD"},
		{"U+FFFD itself", []string{"\uFFFD"}, "\uFFFD"},
		{"sequence broken by the next write", []string{"x\xe2\x82", "A"}, "x\uFFFD\uFFFDA"},
		{"sequence cut by Close", []string{"x\xf0\x9f\x98"}, "x\uFFFD\uFFFD\uFFFD"},
		{"NUL", []string{"\x00"}, "\x00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, buf := newWriter(t)
			for i, s := range tt.writes {
				if err := w.Output(time.Duration(i)*ms, []byte(s)); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if got := joinData(t, buf.Bytes(), "o"); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

// TestInputOutputHeldApart checks that input and output each keep their
// own incomplete sequence.
func TestInputOutputHeldApart(t *testing.T) {
	w, buf := newWriter(t)
	for i, step := range []func() error{
		func() error { return w.Output(0, []byte("é\xc3")) },
		func() error { return w.Input(1*ms, []byte("ü\xe2\x82")) },
		func() error { return w.Output(2*ms, []byte("\xa9")) },
		func() error { return w.Input(3*ms, []byte("\xac")) },
		w.Close,
	} {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	_, evs := readAll(t, buf.Bytes())
	want := []asciicast.Event{
		{0, "o", "é"},
		{1 * ms, "i", "ü"},
		{2 * ms, "o", "é"},
		{3 * ms, "i", "€"},
	}
	if diff := cmp.Diff(want, evs); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

func TestEncoding(t *testing.T) {
	tests := []struct {
		t    time.Duration
		data string
		want string
	}{
		{0, "x", `[0.000000, "o", "x"]`},
		{1500 * time.Nanosecond, "x", `[0.000002, "o", "x"]`},
		{1499 * time.Nanosecond, "x", `[0.000001, "o", "x"]`},
		{90*time.Minute + 5*time.Microsecond, "x", `[5400.000005, "o", "x"]`},
		{0, "\x1b[0m\r\n\t\b\f\x00\x7f", `[0.000000, "o", "\u001b[0m\r\n\t\u0008\u000c\u0000\u007f"]`},
		{0, `"\/`, `[0.000000, "o", "\"\\/"]`},
		{0, "<&> é 東京 😀 \u2028\u2029", `[0.000000, "o", "<&> é 東京 😀 \u2028\u2029"]`},
	}
	for _, tt := range tests {
		w, buf := newWriter(t)
		if err := w.Output(tt.t, []byte(tt.data)); err != nil {
			t.Fatal(err)
		}
		_, got, _ := strings.Cut(buf.String(), "\n")
		if got != tt.want+"\n" {
			t.Errorf("Output(%v, %q) wrote %s; want %s", tt.t, tt.data, got, tt.want)
		}
	}
}

// TestTimes checks that the Writer never writes a time going backwards.
func TestTimes(t *testing.T) {
	w, buf := newWriter(t)
	for _, d := range []time.Duration{-time.Second, 5 * ms, 3 * ms, 5*ms + 400, 7 * ms} {
		if err := w.Output(d, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	_, evs := readAll(t, buf.Bytes())
	var got []time.Duration
	for _, e := range evs {
		got = append(got, e.Time)
	}
	want := []time.Duration{0, 5 * ms, 5 * ms, 5 * ms, 7 * ms}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("times (-want +got):\n%s", diff)
	}
}

// TestLongOutput checks that output too long for one line is split into
// events the Reader accepts, without splitting a UTF-8 sequence.
func TestLongOutput(t *testing.T) {
	w, buf := newWriter(t)
	// Every ESC takes six bytes escaped; the euro signs move the chunk
	// boundaries off rune boundaries.
	data := strings.Repeat("\x1b", 1<<20) + strings.Repeat("€", 100000)
	if err := w.Output(time.Second, []byte(data)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(buf.String(), "\n") {
		if len(line) > asciicast.MaxLineSize {
			t.Errorf("line %d is %d bytes, longer than %d", i+1, len(line), asciicast.MaxLineSize)
		}
	}
	_, evs := readAll(t, buf.Bytes())
	if len(evs) < 2 {
		t.Errorf("got %d events; want the output split", len(evs))
	}
	if got := joinData(t, buf.Bytes(), "o"); got != data {
		t.Errorf("got %d bytes of output back; want the %d written", len(got), len(data))
	}
}

func TestMaxBytes(t *testing.T) {
	w, buf := newWriter(t)
	headerSize := int64(buf.Len())
	event := `[0.000000, "o", "0123456789"]` + "\n"
	w.MaxBytes = headerSize + 3*int64(len(event)) + 5
	for i := range 5 {
		if err := w.Output(0, []byte("0123456789")); err != nil {
			t.Fatalf("Output %d: %v", i, err)
		}
	}
	if !w.Truncated() {
		t.Errorf("Truncated() = false after going over MaxBytes")
	}
	size := buf.Len()
	for i, step := range []func() error{
		func() error { return w.Output(time.Second, []byte("more")) },
		func() error { return w.Input(time.Second, []byte("more")) },
		func() error { return w.Resize(time.Second, 10, 10) },
		func() error { return w.Marker(time.Second, "more") },
		func() error { return w.Output(time.Second, []byte("\xe2")) },
		w.Close,
	} {
		if err := step(); err != nil {
			t.Fatalf("step %d after truncation: %v", i, err)
		}
	}
	if buf.Len() != size {
		t.Errorf("wrote %d more bytes after truncation", buf.Len()-size)
	}
	_, evs := readAll(t, buf.Bytes())
	want := []asciicast.Event{
		{0, "o", "0123456789"},
		{0, "o", "0123456789"},
		{0, "o", "0123456789"},
		{0, "m", asciicast.TruncatedLabel},
	}
	if diff := cmp.Diff(want, evs); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	marker := `[0.000000, "m", "recording truncated"]` + "\n"
	if max := w.MaxBytes + int64(len(marker)); int64(buf.Len()) > max {
		t.Errorf("wrote %d bytes; want at most MaxBytes plus the marker, %d", buf.Len(), max)
	}
}

// TestMaxBytesSplitOutput checks truncation in the middle of one long
// output.
func TestMaxBytesSplitOutput(t *testing.T) {
	w, buf := newWriter(t)
	w.MaxBytes = 200 << 10
	if err := w.Output(0, bytes.Repeat([]byte("y"), 1<<20)); err != nil {
		t.Fatal(err)
	}
	if !w.Truncated() {
		t.Fatal("Truncated() = false")
	}
	_, evs := readAll(t, buf.Bytes())
	marker := asciicast.Event{Type: "m", Data: asciicast.TruncatedLabel}
	if len(evs) < 2 || evs[len(evs)-1] != marker {
		t.Errorf("got %d events; want some output then %+v", len(evs), marker)
	}
	if int64(buf.Len()) > w.MaxBytes+100 {
		t.Errorf("wrote %d bytes; want about MaxBytes, %d", buf.Len(), w.MaxBytes)
	}
}

// TestConcurrent records from several goroutines at once; run with -race.
func TestConcurrent(t *testing.T) {
	w, buf := newWriter(t)
	start := time.Now()
	const goroutines, events = 8, 200
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range events {
				var err error
				switch i % 4 {
				case 0:
					err = w.Output(time.Since(start), fmt.Appendf(nil, "g%d-%d é\n", g, i))
				case 1:
					err = w.Input(time.Since(start), fmt.Appendf(nil, "g%d-%d ü\n", g, i))
				case 2:
					err = w.Resize(time.Since(start), 80+g, 24+i)
				case 3:
					err = w.Marker(time.Since(start), fmt.Sprintf("g%d-%d", g, i))
				}
				if err != nil {
					t.Errorf("goroutine %d event %d: %v", g, i, err)
					return
				}
				_ = w.Truncated()
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_, evs := readAll(t, buf.Bytes()) // fails if times go backwards
	if len(evs) != goroutines*events {
		t.Fatalf("read %d events; want %d", len(evs), goroutines*events)
	}
	seen := map[string]bool{}
	for _, e := range evs {
		seen[e.Type+e.Data] = true
	}
	for g := range goroutines {
		for _, key := range []string{fmt.Sprintf("og%d-0 é\n", g), fmt.Sprintf("ig%d-1 ü\n", g), fmt.Sprintf("mg%d-%d", g, events-1)} {
			if !seen[key] {
				t.Errorf("event %q missing", key)
			}
		}
	}
}

type failWriter struct{ n int }

var errDiskFull = errors.New("disk full")

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errDiskFull
	}
	f.n--
	return len(p), nil
}

func TestWriterErrors(t *testing.T) {
	for _, h := range []asciicast.Header{
		{Version: 1, Width: 80, Height: 24},
		{Version: 3, Width: 80, Height: 24},
		{Width: 0, Height: 24},
		{Width: 80, Height: -1},
		{Width: 1 << 16, Height: 24},
	} {
		if _, err := asciicast.NewWriter(io.Discard, h); err == nil {
			t.Errorf("NewWriter(%+v) succeeded; want an error", h)
		}
	}
	if _, err := asciicast.NewWriter(&failWriter{}, testHeader); !errors.Is(err, errDiskFull) {
		t.Errorf("NewWriter on a failing writer: got %v; want %v", err, errDiskFull)
	}

	w, _ := newWriter(t)
	for _, size := range [][2]int{{0, 24}, {80, 0}, {-1, 24}, {80, 1 << 16}} {
		if err := w.Resize(0, size[0], size[1]); err == nil {
			t.Errorf("Resize(%d, %d) succeeded; want an error", size[0], size[1])
		}
	}
	for _, e := range []asciicast.Event{{Type: ""}, {Type: "r", Data: "80x"}, {Type: "m", Data: strings.Repeat("m", 1<<20)}} {
		if err := w.WriteEvent(e); err == nil {
			t.Errorf("WriteEvent(%.40v) succeeded; want an error", e)
		}
	}
	if err := w.Output(1<<63-1, []byte("x")); err == nil {
		t.Errorf("Output at the largest duration succeeded; want an error")
	}

	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := w.Output(0, []byte("x")); !errors.Is(err, asciicast.ErrClosed) {
		t.Errorf("Output after Close: got %v; want %v", err, asciicast.ErrClosed)
	}
	if err := w.Marker(0, "x"); !errors.Is(err, asciicast.ErrClosed) {
		t.Errorf("Marker after Close: got %v; want %v", err, asciicast.ErrClosed)
	}

	// A write error sticks.
	w, err := asciicast.NewWriter(&failWriter{n: 1}, testHeader)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := w.Output(0, []byte("x")); !errors.Is(err, errDiskFull) {
			t.Errorf("Output %d: got %v; want %v", i, err, errDiskFull)
		}
	}
	for i := range 2 {
		if err := w.Close(); !errors.Is(err, errDiskFull) {
			t.Errorf("Close %d: got %v; want %v", i, err, errDiskFull)
		}
	}
}

// TestCopyEmpty copies a recording with an empty env and an empty output.
func TestCopyEmpty(t *testing.T) {
	h, evs := readAll(t, []byte(`{"version":2,"width":80,"height":24,"env":{}}`+"\n"+`[1, "o", ""]`+"\n"))
	var buf bytes.Buffer
	w, err := asciicast.NewWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if err := w.WriteEvent(e); err != nil {
			t.Fatal(err)
		}
	}
	h2, evs2 := readAll(t, buf.Bytes())
	if diff := cmp.Diff(h, h2, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	// Empty output carries nothing to replay, so the Writer drops it.
	if len(evs2) != 0 {
		t.Errorf("got events %v; want none", evs2)
	}
}

// TestLongMarker checks that a marker is never split, and is refused only
// when its line would be too long for a Reader.
func TestLongMarker(t *testing.T) {
	w, buf := newWriter(t)
	label := strings.Repeat("m", asciicast.MaxLineSize-40)
	if err := w.Marker(time.Second, label); err != nil {
		t.Fatalf("Marker of %d bytes: %v", len(label), err)
	}
	if err := w.Marker(time.Second, strings.Repeat("\x1b", asciicast.MaxLineSize/6)); err == nil {
		t.Errorf("Marker too long for a line succeeded; want an error")
	}
	_, evs := readAll(t, buf.Bytes())
	if len(evs) != 1 || evs[0].Data != label {
		t.Errorf("read %d events; want the long marker alone", len(evs))
	}
}
