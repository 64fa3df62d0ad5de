package doctor

import (
	"testing"

	"go.uber.org/goleak"
)

// Every goroutine a check starts (QUIC dials, HTTP transports, SSH
// probes) ends before Run returns; the test servers' end at cleanup.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
