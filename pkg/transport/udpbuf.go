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

// SysctlFile is where the docs and the warnings say to persist the UDP
// buffer sizes.
const SysctlFile = "/etc/sysctl.d/60-tunnel.conf"

var warnOnce sync.Once

// CheckUDPBuffers warns once, through log, when the kernel's maximum UDP
// socket buffers are below what QUIC wants, and says how to raise them.
func CheckUDPBuffers(log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	warnOnce.Do(func() {
		rmem, rerr := readSysctl("/proc/sys/net/core/rmem_max")
		wmem, werr := readSysctl("/proc/sys/net/core/wmem_max")
		if msg := udpBufferWarning(rmem, rerr, wmem, werr); msg != "" {
			log.Warn(msg)
		}
	})
}

// udpBufferWarning is CheckUDPBuffers' one sentence for the kernel's
// maxima (a value that could not be read is not judged); "" when both
// are large enough.
func udpBufferWarning(rmem int, rerr error, wmem int, werr error) string {
	var low []string
	if rerr == nil && rmem < WantUDPBuffer {
		low = append(low, fmt.Sprintf("net.core.rmem_max is %d bytes", rmem))
	}
	if werr == nil && wmem < WantUDPBuffer {
		low = append(low, fmt.Sprintf("net.core.wmem_max is %d bytes", wmem))
	}
	if len(low) == 0 {
		return ""
	}
	return fmt.Sprintf("%s, below the %d QUIC wants for full throughput; raise them with: sysctl -w net.core.rmem_max=%d net.core.wmem_max=%d (persist in %s)",
		strings.Join(low, " and "), WantUDPBuffer, WantUDPBuffer, WantUDPBuffer, SysctlFile)
}

func readSysctl(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
