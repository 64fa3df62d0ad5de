package transport

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

func TestCheckUDPBuffers(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	CheckUDPBuffers(log)
	CheckUDPBuffers(log) // once only; must not panic either
}

func TestReadSysctl(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if v, err := readSysctl(write("ok", "212992\n")); err != nil || v != 212992 {
		t.Errorf("readSysctl(212992) = %d, %v; want 212992, nil", v, err)
	}
	if _, err := readSysctl(write("junk", "lots\n")); err == nil {
		t.Error("readSysctl(junk) = nil error")
	}
	if _, err := readSysctl(filepath.Join(dir, "missing")); err == nil {
		t.Error("readSysctl(missing) = nil error")
	}
}
