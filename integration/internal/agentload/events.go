package agentload

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The event lines a shard process writes, one per event, tab-separated:
//
//	C <index> <unix nanoseconds>   agent <index> connected
//	F <index> <error>              agent <index> stopped for good
//	W <key>                        an agent warned
//
// Tabs and newlines inside an error or key are replaced by spaces.

// EventWriter is a Reporter that writes event lines to w.
type EventWriter struct {
	mu sync.Mutex
	w  *bufio.Writer
}

// NewEventWriter returns an EventWriter on w.
func NewEventWriter(w io.Writer) *EventWriter { return &EventWriter{w: bufio.NewWriter(w)} }

func (e *EventWriter) line(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, _ = e.w.WriteString(s + "\n")
	_ = e.w.Flush()
}

// Connected implements Reporter.
func (e *EventWriter) Connected(i int, at time.Time) {
	e.line(fmt.Sprintf("C\t%d\t%d", i, at.UnixNano()))
}

// Failed implements Reporter.
func (e *EventWriter) Failed(i int, err error) {
	e.line(fmt.Sprintf("F\t%d\t%s", i, oneLine(err.Error())))
}

// Warned implements Reporter.
func (e *EventWriter) Warned(key string) { e.line("W\t" + oneLine(key)) }

func oneLine(s string) string {
	return strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(s)
}

// ReadEvents reads event lines from r into rep until r ends; it returns
// an error for a line it cannot read, or r's error.
func ReadEvents(r io.Reader, rep Reporter) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), "\t", 3)
		bad := fmt.Errorf("agentload: bad event line %q", sc.Text())
		switch {
		case len(f) == 3 && f[0] == "C":
			i, err1 := strconv.Atoi(f[1])
			ns, err2 := strconv.ParseInt(f[2], 10, 64)
			if err1 != nil || err2 != nil {
				return bad
			}
			rep.Connected(i, time.Unix(0, ns))
		case len(f) == 3 && f[0] == "F":
			i, err := strconv.Atoi(f[1])
			if err != nil {
				return bad
			}
			rep.Failed(i, errors.New(f[2]))
		case len(f) >= 2 && f[0] == "W":
			rep.Warned(strings.Join(f[1:], "\t"))
		default:
			return bad
		}
	}
	return sc.Err()
}
