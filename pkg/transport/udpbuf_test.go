package transport

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// One sentence names what is too low; nothing when both are enough or
// cannot be read.
func TestUDPBufferWarning(t *testing.T) {
	low, enough := 212992, WantUDPBuffer
	gone := errors.New("no /proc")
	const advice = ", below the 7340032 QUIC wants for full throughput; raise them with: sysctl -w net.core.rmem_max=7340032 net.core.wmem_max=7340032 (persist in /etc/sysctl.d/60-tunnel.conf)"
	for _, tc := range []struct {
		name       string
		rmem, wmem int
		rerr, werr error
		want       string
	}{
		{"both low", low, low, nil, nil, "net.core.rmem_max is 212992 bytes and net.core.wmem_max is 212992 bytes" + advice},
		{"receive low", low, enough, nil, nil, "net.core.rmem_max is 212992 bytes" + advice},
		{"send low", enough, low, nil, nil, "net.core.wmem_max is 212992 bytes" + advice},
		{"enough", enough, enough + 1, nil, nil, ""},
		{"unreadable", 0, 0, gone, gone, ""},
	} {
		if got := udpBufferWarning(tc.rmem, tc.rerr, tc.wmem, tc.werr); got != tc.want {
			t.Errorf("%s: %q; want %q", tc.name, got, tc.want)
		}
	}
	// Once per process, whatever the machine says.
	var b strings.Builder
	log := slog.New(slog.NewTextHandler(&b, nil))
	CheckUDPBuffers(log)
	first := b.Len()
	CheckUDPBuffers(log)
	if b.Len() != first || strings.Count(b.String(), "level=WARN") > 1 {
		t.Errorf("CheckUDPBuffers logged more than once:\n%s", b.String())
	}
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
