package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestStreamsOutliveTheFirstCertificate: with one-minute agent
// certificates, three echo streams of app-1's, opened at once and held
// open, go on across more than one certificate lifetime (past the
// expiry of the certificate app-1 opened them with, and another renewal
// after it): one relayed by the gateway (web-3 has direct: off), one
// direct over QUIC (web-2 has direct: {tcp: off}), one direct over TCP
// (web-1 on its defaults). A connection lives as long as its agent holds a
// valid certificate it proved, not only the one it began with; and a lock
// of app-1 still cuts all three at once.
func TestStreamsOutliveTheFirstCertificate(t *testing.T) {
	if testing.Short() {
		t.Skip("holds streams open across several one-minute certificates (about 90 s)")
	}
	e := newSSHEnvWith(t, "--agent-ttl", "1m")
	admin := e.admin
	// web-1 (newSSHEnvWith's) exposes echo on its defaults.
	echo2 := serve(t, echoHandler)
	e.c.startAgent("web-2", admin.token("web-2"), "direct: {tcp: off}\nexpose:\n  - {name: echo, address: "+echo2.addr()+"}\n")
	echo3 := serve(t, echoHandler)
	e.c.startAgent("web-3", admin.token("web-3"), "direct: off\nexpose:\n  - {name: echo, address: "+echo3.addr()+"}\n")

	paths := []struct{ name, node string }{{"tcp", "web-1"}, {"quic", "web-2"}, {"relay", "web-3"}}
	local := map[string]string{}
	yaml := "listen:\n"
	for _, p := range paths {
		local[p.name] = fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
		yaml += fmt.Sprintf("  - {name: %s, address: %s, target: %s/echo}\n", p.name, local[p.name], p.node)
		admin.must("admin", "policy", "allow", "--from", "app-1", "--to", p.node+"/echo")
	}
	app := e.c.startAgent("app-1", admin.token("app-1"), yaml)
	for _, n := range []string{"web-2", "web-3", "app-1"} {
		admin.waitOnline(n, true, 30*time.Second)
	}
	for _, p := range paths {
		dialRetry(t, local[p.name], echoOnce, 30*time.Second)
	}

	// The streams, opened with the certificate app-1 holds now (issued
	// before this point: it expires before started plus one minute; so do
	// the targets').
	started := time.Now()
	conns := map[string]net.Conn{}
	for _, p := range paths {
		conns[p.name] = dialEcho(t, local[p.name])
		defer conns[p.name].Close()
	}

	// Each went the way its target allows.
	logHas := func(jsonForm, textForm string) bool {
		s := app.log.String()
		return strings.Contains(s, jsonForm) || strings.Contains(s, textForm)
	}
	if !logHas(`"msg":"direct stream","listener":"tcp","target":"web-1/echo","transport":"tcp"`,
		`msg="direct stream" listener=tcp target=web-1/echo transport=tcp`) {
		t.Fatalf("app-1 logs no direct stream over TCP to web-1/echo:\n%s", app.log.String())
	}
	if !logHas(`"msg":"direct stream","listener":"quic","target":"web-2/echo"}`,
		"msg=\"direct stream\" listener=quic target=web-2/echo\n") {
		t.Fatalf("app-1 logs no direct stream over QUIC to web-2/echo:\n%s", app.log.String())
	}
	if logHas(`"target":"web-2/echo","transport":"tcp"`, "target=web-2/echo transport=tcp") {
		t.Fatalf("a stream to web-2 (direct: {tcp: off}) went over TCP:\n%s", app.log.String())
	}
	if logHas(`"msg":"direct stream","listener":"relay"`, `msg="direct stream" listener=relay`) {
		t.Fatalf("a stream to web-3 (direct: off) went direct:\n%s", app.log.String())
	}
	waitFor(t, 30*time.Second, "the gateway to count app-1's two direct streams and one relayed", func() bool {
		var agents []struct {
			Name           string `json:"name"`
			DirectStreams  int    `json:"direct_streams"`
			RelayedStreams int    `json:"relayed_streams"`
		}
		if err := json.Unmarshal([]byte(admin.must("admin", "agents", "ls", "--json")), &agents); err != nil {
			t.Fatal(err)
		}
		for _, a := range agents {
			if a.Name == "app-1" {
				return a.DirectStreams == 2 && a.RelayedStreams == 1
			}
		}
		return false
	})

	round := 0
	allAlive := func(when string) {
		t.Helper()
		round++
		broken := false
		for _, p := range paths {
			c := conns[p.name]
			msg := fmt.Sprintf("%s %d\n", when, round)
			_ = c.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := c.Write([]byte(msg)); err != nil {
				t.Errorf("%s: the %s stream broke: %v", when, p.name, err)
				broken = true
				continue
			}
			buf := make([]byte, len(msg))
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
				t.Errorf("%s: the %s stream broke: %q, %v", when, p.name, buf, err)
				broken = true
			}
		}
		if broken {
			t.FailNow()
		}
	}
	renewals := func(a *agentProc) int { return strings.Count(a.log.String(), "certificate renewed") }

	// Across the expiry of the certificates the streams began with,
	// checking every few seconds.
	for time.Since(started) < time.Minute+5*time.Second {
		allAlive("after " + time.Since(started).Round(time.Second).String())
		time.Sleep(5 * time.Second)
	}
	if n := renewals(app); n < 1 {
		t.Fatalf("app-1 did not renew its certificate in over a minute:\n%s", app.log.String())
	}
	// And one renewal more.
	n := renewals(app)
	waitFor(t, 90*time.Second, "app-1 to renew its certificate once more", func() bool { return renewals(app) > n })
	allAlive("past the first certificate and another renewal")

	// A lock of app-1 cuts the three at once.
	admin.must("admin", "agents", "lock", "app-1")
	for _, p := range paths {
		cutStream(t, conns[p.name], "the "+p.name+" stream after app-1 was locked")
	}
}
