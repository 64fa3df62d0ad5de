// Package asciicast reads, writes and replays terminal recordings in the
// asciicast v2 format of asciinema
// (https://docs.asciinema.org/manual/asciicast/v2/), so that recorded SSH
// sessions play in asciinema and its web player as well as with [Play].
//
// A recording is newline-delimited JSON: a header object on the first line,
// then one event per line, a three-element array of the time in seconds
// since the start, a one-letter type and a string:
//
//	{"version":2,"width":80,"height":24,"timestamp":1504467315,"env":{"TERM":"xterm-256color"}}
//	[0.248848, "o", "\u001b[1;31mHello\u001b[0m\r\n"]
//	[1.001376, "i", "ls\r"]
//	[2.500000, "r", "100x30"]
//	[3.000000, "m", "chapter 2"]
//
// To record, create a [Writer] with [NewWriter] and call [Writer.Output],
// [Writer.Input], [Writer.Resize] and [Writer.Marker] as the session runs,
// from any goroutine; [Writer.Close] ends the recording. The Writer turns
// raw terminal bytes into valid JSON strings: a UTF-8 sequence split across
// two writes is joined again, and bytes that are not UTF-8 become U+FFFD.
// Set [Writer.MaxBytes] to bound the size of a recording.
//
// To read, create a [Reader] with [NewReader] and call [Reader.Next] until
// it returns io.EOF. The Reader is strict, since recordings may come from
// elsewhere: see [NewReader] for what it rejects. [Play] replays a recording
// to a terminal with its original timing.
//
// Times have microsecond resolution, the resolution asciinema writes.
package asciicast

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Version is the asciicast format version this package reads and writes.
const Version = 2

// Event types defined by the format. Readers return other types unchanged,
// since the format may grow new ones.
const (
	TypeOutput = "o" // data written to the terminal
	TypeInput  = "i" // data typed by the user
	TypeResize = "r" // the terminal was resized; data is "WIDTHxHEIGHT"
	TypeMarker = "m" // a marker (chapter) with an optional label as data
)

// MaxLineSize is the longest line, header or event, a [Reader] accepts,
// newline excluded. A [Writer] never writes longer lines: it splits long
// output into several events.
const MaxLineSize = 1 << 20

// TruncatedLabel is the label of the marker a [Writer] writes when it
// reaches [Writer.MaxBytes].
const TruncatedLabel = "recording truncated"

// maxSize bounds a terminal dimension, in columns or rows.
const maxSize = 1<<16 - 1

// maxTime bounds the time of an event, about 31 years: well within both
// time.Duration and the integers a float64 holds exactly in microseconds.
const maxTime = 1e9 * time.Second

// ErrUnsupportedVersion is returned, wrapped, by [NewReader] for a recording
// whose header declares a version other than 2.
var ErrUnsupportedVersion = errors.New("unsupported asciicast version")

// Header is the first line of a recording.
//
// The format defines more optional header fields (duration,
// idle_time_limit, command, theme); a [Reader] accepts them and leaves them
// out of Header.
type Header struct {
	// Version is the format version, 2. A Writer writes 2 when it is zero.
	Version int `json:"version"`
	// Width and Height are the terminal's initial size in columns and rows,
	// each between 1 and 65535.
	Width  int `json:"width"`
	Height int `json:"height"`
	// Timestamp is when the recording began, in seconds since the Unix
	// epoch. Zero means unknown and is not written.
	Timestamp int64 `json:"timestamp,omitempty"`
	// Title is an optional name for the recording.
	Title string `json:"title,omitempty"`
	// Env holds environment variables of the recorded session, usually
	// TERM and SHELL.
	Env map[string]string `json:"env,omitempty"`
}

// Event is one event of a recording.
type Event struct {
	// Time is the time since the start of the recording.
	Time time.Duration
	// Type is one of the Type constants or, in a recording read from
	// elsewhere, a type this package does not know.
	Type string
	// Data is the event's data, always valid UTF-8: terminal bytes for
	// output and input, "WIDTHxHEIGHT" for a resize, a label for a marker.
	Data string
}

// ParseResize parses the data of a resize event, "WIDTHxHEIGHT" in decimal,
// each between 1 and 65535.
func ParseResize(data string) (width, height int, err error) {
	ws, hs, ok := strings.Cut(data, "x")
	if !ok {
		return 0, 0, fmt.Errorf("resize %q: want WIDTHxHEIGHT", data)
	}
	width, err = parseSize(ws)
	if err != nil {
		return 0, 0, fmt.Errorf("resize %q: width: %w", data, err)
	}
	height, err = parseSize(hs)
	if err != nil {
		return 0, 0, fmt.Errorf("resize %q: height: %w", data, err)
	}
	return width, height, nil
}

// parseSize parses a dimension: plain decimal digits, no sign, in range.
func parseSize(s string) (int, error) {
	if s == "" || len(s) > 5 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, errors.New("not a number of 1 to 5 digits")
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, err
	}
	if err := checkSize(n); err != nil {
		return 0, err
	}
	return n, nil
}

func checkSize(n int) error {
	if n < 1 || n > maxSize {
		return fmt.Errorf("%d out of range [1, %d]", n, maxSize)
	}
	return nil
}

// appendTime appends t, a whole number of microseconds, as seconds with six
// decimals, the way asciinema writes times.
func appendTime(dst []byte, t time.Duration) []byte {
	us := int64(t / time.Microsecond)
	dst = strconv.AppendInt(dst, us/1e6, 10)
	frac := us % 1e6
	dst = append(dst, '.')
	for d := int64(1e5); d > 0; d /= 10 {
		dst = append(dst, byte('0'+frac/d%10))
	}
	return dst
}

// appendEvent appends the line of one event, newline included. data must
// be valid UTF-8.
func appendEvent(dst []byte, t time.Duration, typ, data string) []byte {
	dst = append(dst, '[')
	dst = appendTime(dst, t)
	dst = append(dst, ", "...)
	dst = appendString(dst, typ)
	dst = append(dst, ", "...)
	dst = appendString(dst, data)
	return append(dst, "]\n"...)
}

const hexDigits = "0123456789abcdef"

// appendString appends s, which must be valid UTF-8, as a JSON string.
// Control characters, DEL and U+2028/U+2029 are escaped, so that a
// recording is safe to view in a terminal and to embed in JavaScript;
// everything else is written as UTF-8.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i, r := range s {
		var esc string
		switch {
		case r == '"':
			esc = `\"`
		case r == '\\':
			esc = `\\`
		case r == '\n':
			esc = `\n`
		case r == '\r':
			esc = `\r`
		case r == '\t':
			esc = `\t`
		case r < 0x20 || r == 0x7f:
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[r>>4], hexDigits[r&0xf])
			start = i + 1
			continue
		case r == '\u2028':
			esc = `\u2028`
		case r == '\u2029':
			esc = `\u2029`
		default:
			continue
		}
		dst = append(dst, s[start:i]...)
		dst = append(dst, esc...)
		start = i + utf8.RuneLen(r)
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendValid appends b with every byte that is not part of a valid UTF-8
// sequence replaced by U+FFFD, one replacement per byte.
func appendValid(dst, b []byte) []byte {
	if utf8.Valid(b) {
		return append(dst, b...)
	}
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r == utf8.RuneError && size == 1 {
			dst = utf8.AppendRune(dst, utf8.RuneError)
		} else {
			dst = append(dst, b[:size]...)
		}
		b = b[size:]
	}
	return dst
}

// incompleteTail returns the index where b's trailing incomplete UTF-8
// sequence starts: the start of a sequence that more bytes could complete.
// It returns len(b) if b does not end with one.
func incompleteTail(b []byte) int {
	for i := len(b) - 1; i >= 0 && i > len(b)-utf8.UTFMax; i-- {
		if utf8.RuneStart(b[i]) {
			if !utf8.FullRune(b[i:]) {
				return i
			}
			break
		}
	}
	return len(b)
}
