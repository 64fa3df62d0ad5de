package sshd

import (
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"
	"unicode/utf8"
)

// NewAsciicast returns a Recorder that writes an asciicast v2 recording to
// w: a header line, then one JSON event per line. Output split inside a
// UTF-8 sequence is held back until the sequence is whole. Close closes w.
func NewAsciicast(w io.WriteCloser, width, height int, term string, start time.Time) (Recorder, error) {
	hdr := struct {
		Version   int               `json:"version"`
		Width     int               `json:"width"`
		Height    int               `json:"height"`
		Timestamp int64             `json:"timestamp"`
		Env       map[string]string `json:"env,omitempty"`
	}{Version: 2, Width: width, Height: height, Timestamp: start.Unix()}
	if term != "" {
		hdr.Env = map[string]string{"TERM": term}
	}
	a := &asciicast{w: w}
	if err := a.line(hdr); err != nil {
		return nil, fmt.Errorf("asciicast header: %w", err)
	}
	return a, nil
}

type asciicast struct {
	mu      sync.Mutex // guards the fields below
	w       io.WriteCloser
	pending []byte // an incomplete UTF-8 sequence
	last    time.Duration
	err     error // the first write error; later events are dropped
}

func (a *asciicast) Output(t time.Duration, data []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.last = t
	buf := append(a.pending, data...)
	cut := len(buf)
	// Hold back a trailing incomplete sequence (at most 3 bytes).
	for i := len(buf) - 1; i >= 0 && i >= len(buf)-3; i-- {
		if utf8.RuneStart(buf[i]) {
			if !utf8.FullRune(buf[i:]) {
				cut = i
			}
			break
		}
	}
	a.pending = append([]byte(nil), buf[cut:]...)
	if cut > 0 {
		a.event(t, "o", string(buf[:cut]))
	}
}

func (a *asciicast) Resize(t time.Duration, w, h int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.event(t, "r", fmt.Sprintf("%dx%d", w, h))
}

func (a *asciicast) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.pending) > 0 {
		a.event(a.last, "o", string(a.pending))
		a.pending = nil
	}
	if err := a.w.Close(); err != nil && a.err == nil {
		a.err = err
	}
	return a.err
}

func (a *asciicast) event(t time.Duration, code, data string) {
	if a.err == nil {
		a.err = a.line([]any{t.Seconds(), code, data})
	}
}

func (a *asciicast) line(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = a.w.Write(append(b, '\n'))
	return err
}
