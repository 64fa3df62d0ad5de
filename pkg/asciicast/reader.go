package asciicast

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
)

// A Reader reads the events of a recording. It is not safe for concurrent
// use.
type Reader struct {
	h    Header
	s    *bufio.Scanner
	line int     // number of the line last read, from 1
	last float64 // time of the last event, in seconds as written
	err  error   // returned by every Next after the first error
}

// NewReader reads the header of a recording from r and returns a Reader
// for its events.
//
// The Reader is strict. It rejects, with an error naming the line:
//   - a header that is not a JSON object, whose version is not 2 (the error
//     wraps [ErrUnsupportedVersion]), or whose width or height is missing or
//     outside 1 to 65535;
//   - a line longer than [MaxLineSize], or empty;
//   - an event that is not an array of exactly a number and two strings;
//   - an event time that is negative, larger than about 31 years, or
//     earlier than the previous event's (equal times are fine);
//   - an event with an empty type, or a resize whose data [ParseResize]
//     rejects.
//
// It accepts what the format allows to grow: header fields it does not
// know, and event types other than "o", "i", "r" and "m", which [Reader.Next]
// returns unchanged with their data. Invalid UTF-8 and unpaired surrogate
// escapes in strings are read as U+FFFD.
func NewReader(r io.Reader) (*Reader, error) {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 64<<10), MaxLineSize+1) // room for the newline
	cr := &Reader{s: s}
	line, err := cr.scan()
	if err == io.EOF {
		return nil, errors.New("asciicast: empty recording, no header")
	}
	if err != nil {
		return nil, err
	}
	if err := cr.parseHeader(line); err != nil {
		return nil, fmt.Errorf("asciicast: line 1: header: %w", err)
	}
	return cr, nil
}

// Header returns the recording's header.
func (r *Reader) Header() Header { return r.h }

// Next returns the next event, or io.EOF after the last one. After an
// error, Next returns the same error again.
func (r *Reader) Next() (Event, error) {
	if r.err != nil {
		return Event{}, r.err
	}
	line, err := r.scan()
	if err == nil {
		var e Event
		if e, err = r.parseEvent(line); err == nil {
			return e, nil
		}
		err = fmt.Errorf("asciicast: line %d: %w", r.line, err)
	}
	r.err = err
	return Event{}, err
}

// scan returns the next line, or io.EOF.
func (r *Reader) scan() ([]byte, error) {
	if !r.s.Scan() {
		err := r.s.Err()
		switch {
		case err == nil:
			return nil, io.EOF
		case errors.Is(err, bufio.ErrTooLong):
			return nil, fmt.Errorf("asciicast: line %d: longer than %d bytes", r.line+1, MaxLineSize)
		default:
			return nil, fmt.Errorf("asciicast: read: %w", err)
		}
	}
	r.line++
	line := r.s.Bytes()
	if len(bytes.TrimSpace(line)) == 0 {
		return nil, fmt.Errorf("asciicast: line %d: empty line", r.line)
	}
	return line, nil
}

func (r *Reader) parseHeader(line []byte) error {
	if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("{")) {
		return errors.New("not a JSON object")
	}
	var h struct {
		Header
		Version *int `json:"version"`
		Width   *int `json:"width"`
		Height  *int `json:"height"`
	}
	if err := json.Unmarshal(line, &h); err != nil {
		return err
	}
	switch {
	case h.Version == nil:
		return errors.New("no version")
	case *h.Version != Version:
		return fmt.Errorf("version %d: %w", *h.Version, ErrUnsupportedVersion)
	case h.Width == nil:
		return errors.New("no width")
	case h.Height == nil:
		return errors.New("no height")
	}
	if err := checkSize(*h.Width); err != nil {
		return fmt.Errorf("width %w", err)
	}
	if err := checkSize(*h.Height); err != nil {
		return fmt.Errorf("height %w", err)
	}
	r.h = h.Header
	r.h.Version, r.h.Width, r.h.Height = *h.Version, *h.Width, *h.Height
	return nil
}

func (r *Reader) parseEvent(line []byte) (Event, error) {
	var a []json.RawMessage
	if err := json.Unmarshal(line, &a); err != nil {
		return Event{}, fmt.Errorf("event: %w", err)
	}
	if len(a) != 3 {
		return Event{}, fmt.Errorf("event of %d elements, want 3", len(a))
	}
	// json.Unmarshal leaves its target alone for null: reject null first.
	var secs float64
	if c := a[0][0]; c != '-' && (c < '0' || c > '9') {
		return Event{}, errors.New("event time is not a number")
	}
	if err := json.Unmarshal(a[0], &secs); err != nil {
		return Event{}, fmt.Errorf("event time: %w", err)
	}
	var e Event
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		dst  *string
	}{{"type", a[1], &e.Type}, {"data", a[2], &e.Data}} {
		if f.raw[0] != '"' {
			return Event{}, fmt.Errorf("event %s is not a string", f.name)
		}
		if err := json.Unmarshal(f.raw, f.dst); err != nil {
			return Event{}, fmt.Errorf("event %s: %w", f.name, err)
		}
	}
	switch {
	case secs < 0:
		return Event{}, fmt.Errorf("negative event time %v", secs)
	case secs > maxTime.Seconds():
		return Event{}, fmt.Errorf("event time %v later than %v", secs, maxTime.Seconds())
	case secs < r.last:
		return Event{}, fmt.Errorf("event time %v before the previous event's, %v", secs, r.last)
	case e.Type == "":
		return Event{}, errors.New("event with an empty type")
	case e.Type == TypeResize:
		if _, _, err := ParseResize(e.Data); err != nil {
			return Event{}, err
		}
	}
	r.last = secs
	e.Time = time.Duration(math.Round(secs*1e6)) * time.Microsecond
	return e, nil
}
