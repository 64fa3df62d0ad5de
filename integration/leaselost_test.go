package integration

import (
	"encoding/json"
	"fmt"
	"syscall"
	"testing"
	"time"
)

// TestDirectLeaseLost: app-1 holds a direct stream (over TCP, to web-1)
// and goes silent (SIGSTOP) until the gateway drops its connection at the
// idle timeout, which ends the stream's lease without a word from app-1.
// The gateway asks web-1 to report the stream and tracks it from that
// report: after SIGCONT the stream still works (only the gateway was
// lost), `agents ls` counts it for app-1 once it is back, and a lock of
// app-1 cuts it, as it would have before the silence.
func TestDirectLeaseLost(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the gateway's idle timeout of a stopped agent")
	}
	e := newSSHEnv(t) // web-1 exposes echo on its defaults (direct over TCP)
	admin := e.admin
	admin.must("admin", "policy", "allow", "--from", "app-1", "--to", "web-1/echo")
	local := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	app := e.c.startAgent("app-1", admin.token("app-1"), "listen:\n  - {name: echo, address: "+local+", target: web-1/echo}\n")
	admin.waitOnline("app-1", true, 30*time.Second)
	dialRetry(t, local, echoOnce, 30*time.Second)
	c := dialEcho(t, local)
	defer c.Close()

	directStreams := func() (online bool, n int) {
		var agents []struct {
			Name          string `json:"name"`
			Online        bool   `json:"online"`
			DirectStreams int    `json:"direct_streams"`
		}
		if err := json.Unmarshal([]byte(admin.must("admin", "agents", "ls", "--json")), &agents); err != nil {
			t.Fatal(err)
		}
		for _, a := range agents {
			if a.Name == "app-1" {
				return a.Online, a.DirectStreams
			}
		}
		return false, 0
	}
	waitFor(t, 30*time.Second, "the gateway to count app-1's direct stream", func() bool {
		_, n := directStreams()
		return n == 1
	})

	// Silent: the gateway drops app-1 at its idle timeout.
	if err := app.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := true
	defer func() {
		if stopped {
			_ = app.cmd.Process.Signal(syscall.SIGCONT)
		}
	}()
	admin.waitOnline("app-1", false, 60*time.Second)
	if err := app.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false

	// The stream went on, and the gateway tracks it again.
	if err := echoOnce(c); err != nil {
		t.Fatalf("the direct stream after app-1 lost the gateway: %v", err)
	}
	waitFor(t, 60*time.Second, "app-1 back online with its direct stream tracked", func() bool {
		online, n := directStreams()
		return online && n == 1
	})
	if err := echoOnce(c); err != nil {
		t.Fatalf("the direct stream after app-1 came back: %v", err)
	}

	// A lock of app-1 reaches it.
	admin.must("admin", "agents", "lock", "app-1")
	cutStream(t, c, "app-1's direct stream after its lock")
}
