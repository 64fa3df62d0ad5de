package transport

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
)

// WantUDPBuffer is the socket buffer size quic-go asks for (7 MiB); below it
// throughput suffers on fast links.
const WantUDPBuffer = 7 << 20

var warnOnce sync.Once

// CheckUDPBuffers warns once, through log, when the kernel's maximum UDP
// socket buffers are below what QUIC wants, and says how to raise them.
func CheckUDPBuffers(log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	warnOnce.Do(func() {
		for _, name := range []string{"rmem_max", "wmem_max"} {
			v, err := readSysctl("/proc/sys/net/core/" + name)
			if err != nil || v >= WantUDPBuffer {
				continue
			}
			log.Warn(fmt.Sprintf("net.core.%s is %d bytes, below the %d QUIC wants for full throughput; raise it with: sysctl -w net.core.rmem_max=%d net.core.wmem_max=%d (persist in /etc/sysctl.d/)",
				name, v, WantUDPBuffer, WantUDPBuffer, WantUDPBuffer))
		}
	})
}

func readSysctl(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
