package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/term"
)

// progress draws tunnel scp's progress line on a terminal: the file's
// name, bytes copied of its size, percent and rate, redrawn in place at
// most every progressEvery and once more when the file is done. A nil
// *progress draws nothing (stderr is not a terminal, or -q).
type progress struct {
	w     io.Writer
	now   func() time.Time
	width int // columns of the terminal

	mu    sync.Mutex // guards the fields below
	name  string
	total int64
	done  int64
	start time.Time
	drawn time.Time // when the line was last drawn
}

const progressEvery = 200 * time.Millisecond

// newProgress returns a progress line on w when w is a terminal and quiet
// is false, else nil.
func newProgress(w io.Writer, now func() time.Time, quiet bool) *progress {
	if quiet {
		return nil
	}
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	width, _, err := term.GetSize(int(f.Fd()))
	if err != nil || width <= 0 {
		width = 80
	}
	return &progress{w: w, now: now, width: width}
}

// begin starts the line of one file of size total.
func (p *progress) begin(name string, total int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.name, p.total, p.done = name, total, 0
	p.start = p.now()
	p.drawLocked(p.start)
}

// add counts n more bytes copied.
func (p *progress) add(n int64) {
	if p == nil || n <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done += n
	if now := p.now(); now.Sub(p.drawn) >= progressEvery {
		p.drawLocked(now)
	}
}

// end draws the file's last state and ends the line, so what follows
// (the next file, an error) starts on a line of its own.
func (p *progress) end() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.drawLocked(p.now())
	fmt.Fprint(p.w, "\n")
}

func (p *progress) drawLocked(now time.Time) {
	p.drawn = now
	fmt.Fprint(p.w, "\r"+formatProgress(p.name, p.done, p.total, now.Sub(p.start), p.width)+"\x1b[K")
}

// formatProgress renders one progress line at most width-1 columns wide:
//
//	app.tar.gz               12.0 MiB / 50.0 MiB  24%  8.0 MiB/s
func formatProgress(name string, done, total int64, elapsed time.Duration, width int) string {
	pct := 100
	if total > 0 {
		pct = int(min(done, total) * 100 / total)
	}
	rate := "-"
	if elapsed > 0 {
		rate = humanBytes(int64(float64(done)/elapsed.Seconds())) + "/s"
	}
	stats := fmt.Sprintf("%s / %s %3d%% %11s", humanBytes(done), humanBytes(total), pct, rate)
	room := width - 1 - len(stats) - 2
	if room < 8 {
		room = 8
	}
	r := []rune(name)
	if len(r) > room {
		// Keep the end of the name: it tells files apart.
		r = append([]rune("…"), r[len(r)-room+1:]...)
	}
	return string(r) + strings.Repeat(" ", room-len(r)) + "  " + stats
}

// humanBytes renders n in B, KiB, MiB, GiB or TiB.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, suffixes := float64(n)/unit, []string{"KiB", "MiB", "GiB", "TiB"}
	i := 0
	for v >= unit && i < len(suffixes)-1 {
		v /= unit
		i++
	}
	return strings.TrimSpace(fmt.Sprintf("%.1f %s", v, suffixes[i]))
}
