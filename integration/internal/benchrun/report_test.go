package benchrun

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWriteSection(t *testing.T) {
	p := filepath.Join(t.TempDir(), "B.md")
	if err := os.WriteFile(p, []byte("# Benchmarks\n\nkeep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSection(p, "one\n"); err != nil {
		t.Fatal(err)
	}
	if err := writeSection(p, "two\n"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	want := "# Benchmarks\n\nkeep me\n\n" + markerStart + "\ntwo\n" + markerEnd + "\n"
	if string(b) != want {
		t.Fatalf("got %q\nwant %q", b, want)
	}
	// Text after the end marker stays.
	if err := os.WriteFile(p, []byte("a\n"+markerStart+"\nold\n"+markerEnd+"\nafter\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSection(p, "new"); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(p)
	if want := "a\n" + markerStart + "\nnew\n" + markerEnd + "\nafter\n"; string(b) != want {
		t.Fatalf("got %q, want %q", b, want)
	}
	// A missing file is created.
	q := filepath.Join(t.TempDir(), "new.md")
	if err := writeSection(q, "x"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(q); !strings.HasPrefix(string(b), markerStart) {
		t.Fatalf("got %q", b)
	}
}

func TestStats(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median = %v", m)
	}
	if m := median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Errorf("median = %v", m)
	}
	if m := median(nil); !math.IsNaN(m) {
		t.Errorf("median(nil) = %v", m)
	}
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i))
	}
	if p := percentile(ds, 50); p != 50 {
		t.Errorf("p50 = %v", p)
	}
	if p := percentile(ds, 99); p != 99 {
		t.Errorf("p99 = %v", p)
	}
	if s := fmtNum(12345.4, 0); s != "12,345" {
		t.Errorf("fmtNum = %q", s)
	}
}

func TestParseFlags(t *testing.T) {
	c, err := parseFlags([]string{"--quick", "--paths", "direct,ssh"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if c.Reps != 1 || c.PathsDefault || len(c.Paths) != 2 || c.IperfTime != 2*time.Second {
		t.Fatalf("%+v", c)
	}
	if _, err := parseFlags([]string{"--paths", "bogus"}, os.Stderr); err == nil {
		t.Fatal("bogus path accepted")
	}
}
