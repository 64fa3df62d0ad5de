package asciicast

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
	"unicode/utf8"
)

// ErrClosed is returned by a [Writer]'s methods after [Writer.Close].
var ErrClosed = errors.New("asciicast: writer closed")

// maxChunk is the most UTF-8 text a Writer puts in one output or input
// event. Escaped, it is at most six times longer, well under MaxLineSize.
const maxChunk = 64 << 10

// A Writer writes a recording. Its methods are safe to call from several
// goroutines at once; each event is written with a single Write call to the
// underlying writer, so a recording cut short ends with whole events, or at
// worst a partial last line.
//
// Event times are rounded to the microsecond and never go backwards: a time
// earlier than the previous event's, as two goroutines racing to record
// their events can produce, is written as the previous event's time.
// Negative times are written as zero.
type Writer struct {
	// MaxBytes, if positive, bounds the bytes written, header included.
	// When an event would go over it, the Writer drops that event and all
	// later ones, and writes instead one marker event labelled
	// TruncatedLabel; so a recording can exceed MaxBytes by that one line.
	// Set MaxBytes before the first event.
	MaxBytes int64

	mu        sync.Mutex    // guards the fields below
	w         io.Writer     // destination
	n         int64         // bytes written to w
	last      time.Duration // time of the last event written
	pendOut   []byte        // incomplete UTF-8 sequence ending the last output
	pendIn    []byte        // incomplete UTF-8 sequence ending the last input
	truncated bool          // MaxBytes reached: drop all events
	closed    bool          // Close was called
	err       error         // first write error, returned from then on
	scratch   []byte        // pending bytes joined with new data
	text      []byte        // scratch made valid UTF-8
	line      []byte        // lines to write
}

// NewWriter writes h as the header of a new recording to w and returns a
// Writer for its events. h.Version must be 0 or 2, and h.Width and
// h.Height between 1 and 65535.
//
// The Writer does not close w.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	if h.Version == 0 {
		h.Version = Version
	}
	if h.Version != Version {
		return nil, fmt.Errorf("asciicast: header: version %d: %w", h.Version, ErrUnsupportedVersion)
	}
	if err := checkSize(h.Width); err != nil {
		return nil, fmt.Errorf("asciicast: header: width %w", err)
	}
	if err := checkSize(h.Height); err != nil {
		return nil, fmt.Errorf("asciicast: header: height %w", err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(h); err != nil { // Encode ends the line
		return nil, fmt.Errorf("asciicast: header: %w", err)
	}
	n, err := w.Write(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("asciicast: write header: %w", err)
	}
	return &Writer{w: w, n: int64(n)}, nil
}

// Output records data written to the terminal at time t since the start.
//
// data need not end on a UTF-8 boundary: an incomplete sequence at its end
// is held back until the next call to Output, or until Close, which writes
// it as U+FFFD. Bytes that cannot be UTF-8 are written as U+FFFD, one per
// byte. Long data is split into several events of the same time.
func (w *Writer) Output(t time.Duration, data []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stream(t, TypeOutput, &w.pendOut, data)
}

// Input records data typed by the user at time t, as [Writer.Output] does
// for output; input and output each hold back their own incomplete
// sequence.
func (w *Writer) Input(t time.Duration, data []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stream(t, TypeInput, &w.pendIn, data)
}

// Resize records that the terminal became width columns by height rows at
// time t. Both must be between 1 and 65535.
func (w *Writer) Resize(t time.Duration, width, height int) error {
	if err := checkSize(width); err != nil {
		return fmt.Errorf("asciicast: resize: width %w", err)
	}
	if err := checkSize(height); err != nil {
		return fmt.Errorf("asciicast: resize: height %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.event(t, TypeResize, fmt.Sprintf("%dx%d", width, height))
}

// Marker records a marker, a point a player can jump to, at time t. The
// label may be empty; invalid UTF-8 in it is replaced by U+FFFD. Its event
// must fit in MaxLineSize bytes, so a label of up to 170 KiB always does.
func (w *Writer) Marker(t time.Duration, label string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.event(t, TypeMarker, label)
}

// WriteEvent records e, of any non-empty type, as the other methods do:
// output and input as [Writer.Output] and [Writer.Input], a resize after
// checking its data with [ParseResize], and anything else like a marker.
// It copies the events of a [Reader] to a new recording: the copy has the
// same events except that empty output and input are left out, and output
// or input too long for one line is split into several events of the same
// time.
func (w *Writer) WriteEvent(e Event) error {
	switch e.Type {
	case TypeOutput:
		return w.Output(e.Time, []byte(e.Data))
	case TypeInput:
		return w.Input(e.Time, []byte(e.Data))
	case TypeResize:
		if _, _, err := ParseResize(e.Data); err != nil {
			return fmt.Errorf("asciicast: %w", err)
		}
	case "":
		return errors.New("asciicast: event without a type")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.event(e.Time, e.Type, e.Data)
}

// Truncated reports whether the recording reached MaxBytes and has dropped
// events since.
func (w *Writer) Truncated() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.truncated
}

// Close ends the recording, writing any held-back incomplete UTF-8 sequence
// as U+FFFD at the time of the last event. It returns the first error the
// Writer met writing, if any. Later calls return the same result; other
// methods return ErrClosed.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.err
	}
	for _, p := range []struct {
		typ  string
		pend *[]byte
	}{{TypeOutput, &w.pendOut}, {TypeInput, &w.pendIn}} {
		if len(*p.pend) > 0 && w.err == nil && !w.truncated {
			data := string(appendValid(nil, *p.pend))
			*p.pend = (*p.pend)[:0]
			w.write(w.last, p.typ, data) // sets w.err
		}
	}
	w.closed = true
	return w.err
}

// stream records output or input data, holding back an incomplete UTF-8
// sequence at its end in *pend. w.mu must be held.
func (w *Writer) stream(t time.Duration, typ string, pend *[]byte, data []byte) error {
	if err := w.check(t); err != nil || w.truncated {
		return err
	}
	b := append(append(w.scratch[:0], *pend...), data...)
	w.scratch = b
	k := incompleteTail(b)
	*pend = append((*pend)[:0], b[k:]...)
	text := appendValid(w.text[:0], b[:k])
	w.text = text
	if len(text) == 0 {
		return nil
	}
	var chunks []string
	for len(text) > maxChunk {
		n := maxChunk
		for !utf8.RuneStart(text[n]) {
			n--
		}
		chunks = append(chunks, string(text[:n]))
		text = text[n:]
	}
	chunks = append(chunks, string(text))
	return w.write(t, typ, chunks...)
}

// event records one event whose data is not split. w.mu must be held.
func (w *Writer) event(t time.Duration, typ, data string) error {
	if err := w.check(t); err != nil || w.truncated {
		return err
	}
	if !utf8.ValidString(data) {
		data = string(appendValid(nil, []byte(data)))
	}
	// Only output and input can be split; other events must fit a line,
	// as they always do if short enough to escape every byte.
	if len(typ)+len(data) > MaxLineSize/6-32 {
		if n := len(appendEvent(nil, maxTime, typ, data)) - 1; n > MaxLineSize {
			return fmt.Errorf("asciicast: %q event of %d bytes, longer than %d", typ, n, MaxLineSize)
		}
	}
	return w.write(t, typ, data)
}

// check returns the error that stops an event at time t being written.
// w.mu must be held.
func (w *Writer) check(t time.Duration) error {
	switch {
	case w.closed:
		return ErrClosed
	case w.err != nil:
		return w.err
	case t > maxTime:
		return fmt.Errorf("asciicast: time %v later than %v", t, maxTime)
	}
	return nil
}

// write writes one event for each piece of data, all at time t, unless
// that takes the recording over MaxBytes. w.mu must be held, and t checked.
func (w *Writer) write(t time.Duration, typ string, data ...string) error {
	t = max(t.Round(time.Microsecond), w.last, 0)
	buf := w.line[:0]
	for _, d := range data {
		start := len(buf)
		buf = appendEvent(buf, t, typ, d)
		if w.MaxBytes > 0 && w.n+int64(len(buf)) > w.MaxBytes {
			buf = appendEvent(buf[:start], t, TypeMarker, TruncatedLabel)
			w.truncated = true
			w.pendOut, w.pendIn = nil, nil
			break
		}
	}
	w.last = t
	n, err := w.w.Write(buf)
	w.n += int64(n)
	if err != nil {
		w.err = fmt.Errorf("asciicast: write event: %w", err)
	}
	// Keep the scratch buffers for the next event, unless one huge write
	// made them too big to keep.
	w.line = keep(buf)
	w.scratch = keep(w.scratch)
	w.text = keep(w.text)
	return w.err
}

func keep(b []byte) []byte {
	if cap(b) > 4*maxChunk {
		return nil
	}
	return b
}
