package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

func TestFormatProgress(t *testing.T) {
	tests := []struct {
		name        string
		done, total int64
		elapsed     time.Duration
		width       int
		want        string
	}{
		{"app.tar.gz", 12 << 20, 48 << 20, 2 * time.Second, 60,
			"app.tar.gz             12.0 MiB / 48.0 MiB  25%   6.0 MiB/s"},
		{"empty", 0, 0, 0, 40, "empty        0 B / 0 B 100%           -"},
		{"a-very-long-file-name-that-does-not-fit.tar.gz", 512, 1024, time.Second, 50,
			"…not-fit.tar.gz  512 B / 1.0 KiB  50%     512 B/s"},
	}
	for _, tc := range tests {
		got := formatProgress(tc.name, tc.done, tc.total, tc.elapsed, tc.width)
		if got != tc.want {
			t.Errorf("formatProgress(%q, %d, %d, %s, %d) =\n%q; want\n%q", tc.name, tc.done, tc.total, tc.elapsed, tc.width, got, tc.want)
		}
		if n := len([]rune(got)); n != tc.width-1 {
			t.Errorf("%q is %d columns; want the terminal's %d less one", got, n, tc.width)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 30: "5.0 GiB", 3 << 40: "3.0 TiB", 2048 << 40: "2048.0 TiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q; want %q", n, got, want)
		}
	}
}

// TestProgressOnlyOnATerminal: scripts and tests (a buffer, a pipe, a
// file) get no progress line, and -q turns it off.
func TestProgressOnlyOnATerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for name, out := range map[string]any{"buffer": &bytes.Buffer{}, "pipe": w, "file": f} {
		if p := newProgress(out.(interface{ Write([]byte) (int, error) }), time.Now, false); p != nil {
			t.Errorf("progress on a %s; want none", name)
		}
	}
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatalf("open a pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	defer tty.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 24, Cols: 132}); err != nil {
		t.Fatal(err)
	}
	if p := newProgress(tty, time.Now, false); p == nil || p.width != 132 {
		t.Errorf("progress on a 132-column terminal: %+v; want one 132 wide", p)
	}
	if p := newProgress(tty, time.Now, true); p != nil {
		t.Error("progress on a terminal with -q")
	}
	// A nil progress is off: every call is a no-op.
	var p *progress
	p.begin("x", 1)
	p.add(1)
	p.end()
}

// TestSCPProgressLine copies a file with a progress line and a clock that
// moves one second per reading: the line is redrawn in place and ends at
// 100% on a line of its own.
func TestSCPProgressLine(t *testing.T) {
	root := t.TempDir()
	local, home := filepath.Join(root, "local"), filepath.Join(root, "home")
	data := strings.Repeat("x", 1<<20)
	writeFile(t, filepath.Join(local, "big.bin"), data, 0o644)
	os.Mkdir(home, 0o755)
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Second)
		return now
	}
	for _, upload := range []bool{true, false} {
		var out bytes.Buffer
		cp, _ := newCopier(t, home, false)
		cp.progress = &progress{w: &out, now: clock, width: 80}
		var err error
		if upload {
			err = cp.copy(cp.local, filepath.Join(local, "big.bin"), cp.remote, ".")
		} else {
			err = cp.copy(cp.remote, "big.bin", cp.local, filepath.Join(local, "back.bin"))
		}
		if err != nil {
			t.Fatal(err)
		}
		got := out.String()
		lines := strings.Split(got, "\r")
		last := lines[len(lines)-1]
		if strings.Count(got, "\r") < 3 || !strings.HasSuffix(last, "\x1b[K\n") || strings.Count(got, "\n") != 1 {
			t.Errorf("upload %v: progress output %q; want several redraws ending in one newline", upload, got)
		}
		if !strings.HasPrefix(last, "big.bin ") || !strings.Contains(last, "1.0 MiB / 1.0 MiB 100%") || !strings.Contains(last, "KiB/s") {
			t.Errorf("upload %v: last line %q; want big.bin, 1.0 MiB / 1.0 MiB 100%% and a rate", upload, last)
		}
		if !strings.Contains(lines[1], "big.bin") || !strings.Contains(lines[1], "  0%") {
			t.Errorf("upload %v: first line %q; want big.bin at 0%%", upload, lines[1])
		}
	}
	checkFile(t, filepath.Join(local, "back.bin"), data, 0o644)
}
