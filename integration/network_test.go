package integration

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/integration/internal/pgtest"
)

// Sources are simulated with loopback addresses: on Linux every address
// of 127.0.0.0/8 is local, so a client bound to 127.0.0.2 reaches a
// gateway on 127.0.0.1 from the source 127.0.0.2.

// apiFrom asks the gateway's API at addr for /v1/ping from the source
// address src, and returns the error (nil: answered).
func apiFrom(src, addr string) error {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	resp, err := c.Get("https://" + addr + "/v1/ping")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// quicFrom opens a QUIC connection to addr from src (no client
// certificate: a refusal by the network rules comes before the
// handshake, anything else fails later, in the handshake or after it).
func quicFrom(t *testing.T, src, addr string) error {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	defer tr.Close()
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := tr.Dial(ctx, ua, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"tunnel"}}, &quic.Config{})
	if err == nil {
		c.CloseWithError(0, "")
	}
	return err
}

// refusedByRules reports whether err is a QUIC CONNECTION_REFUSED.
func refusedByRules(err error) bool {
	var te *quic.TransportError
	return errors.As(err, &te) && te.ErrorCode == quic.ConnectionRefused
}

// srcProxy forwards TCP and UDP arriving on one port of 127.0.0.1 to
// target, from the source address src: what the agent and tunnel client
// binaries, which bind no source address, see as coming from src.
type srcProxy struct {
	addr string
	ln   net.Listener
	udp  *net.UDPConn
	wg   sync.WaitGroup

	mu    sync.Mutex
	conns []io.Closer
	peers map[string]*net.UDPConn
}

func newSrcProxy(t *testing.T, src, target string) *srcProxy {
	t.Helper()
	p := &srcProxy{peers: map[string]*net.UDPConn{}}
	for i := 0; ; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: ln.Addr().(*net.TCPAddr).Port})
		if err != nil {
			ln.Close()
			if i < 20 {
				continue
			}
			t.Fatal(err)
		}
		p.ln, p.udp, p.addr = ln, udp, ln.Addr().String()
		break
	}
	from := net.ParseIP(src)
	p.wg.Add(2)
	go func() { // TCP
		defer p.wg.Done()
		for {
			c, err := p.ln.Accept()
			if err != nil {
				return
			}
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: from}, Timeout: 10 * time.Second}
			up, err := d.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			p.wg.Add(2)
			go func() { defer p.wg.Done(); io.Copy(up, c); up.Close() }()
			go func() { defer p.wg.Done(); io.Copy(c, up); c.Close() }()
		}
	}()
	ta, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatal(err)
	}
	go func() { // UDP: one upstream socket per client address
		defer p.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, ca, err := p.udp.ReadFromUDP(buf)
			if err != nil {
				return
			}
			p.mu.Lock()
			up := p.peers[ca.String()]
			if up == nil {
				up, err = net.ListenUDP("udp", &net.UDPAddr{IP: from})
				if err != nil {
					p.mu.Unlock()
					continue
				}
				p.peers[ca.String()] = up
				p.wg.Add(1)
				go func() {
					defer p.wg.Done()
					b := make([]byte, 65536)
					for {
						n, _, err := up.ReadFromUDP(b)
						if err != nil {
							return
						}
						_, _ = p.udp.WriteToUDP(b[:n], ca)
					}
				}()
			}
			p.mu.Unlock()
			_, _ = up.WriteToUDP(buf[:n], ta)
		}
	}()
	t.Cleanup(func() {
		p.ln.Close()
		p.udp.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		for _, u := range p.peers {
			u.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// jhConfigFrom is e.cfg with every SSH connection bound to src (the jump
// host's included: ProxyJump's ssh reads the same file).
func (e *jhEnv) jhConfigFrom(t *testing.T, src string) string {
	t.Helper()
	base, err := os.ReadFile(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "ssh_config_"+src)
	if err := os.WriteFile(cfg, append([]byte("BindAddress "+src+"\n"), base...), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// networkRules is tunnel admin network ls --json.
func networkRules(t *testing.T, admin *user) []struct {
	ID       int64  `json:"id"`
	Effect   string `json:"effect"`
	CIDR     string `json:"cidr"`
	Listener string `json:"listener"`
	Comment  string `json:"comment"`
} {
	t.Helper()
	var rules []struct {
		ID       int64  `json:"id"`
		Effect   string `json:"effect"`
		CIDR     string `json:"cidr"`
		Listener string `json:"listener"`
		Comment  string `json:"comment"`
	}
	if err := json.Unmarshal([]byte(admin.must("admin", "network", "ls", "--json")), &rules); err != nil {
		t.Fatalf("network ls --json: %v", err)
	}
	return rules
}

// TestNetworkRules: with a real gateway, its jump host and an agent, a
// denied source is refused on the API (reset at accept), over QUIC
// (CONNECTION_REFUSED before the handshake, and the real agent never
// comes online) and at the jump host (ssh -J fails), while other sources
// get in; a live SSH session from a newly denied source is cut; an
// allow-list admits only its networks; a rule that would lock the caller
// out of the API is refused without --force; every change is audited.
func TestNetworkRules(t *testing.T) {
	e := newJHEnv(t)
	admin := e.admin
	from2, from3 := e.jhConfigFrom(t, "127.0.0.2"), e.jhConfigFrom(t, "127.0.0.3")
	sshVia := func(cfg, cmd string) (int, string) {
		return jhRun(t, "ssh", "-F", cfg, "-J", e.jump(), e.login+"@web-1", cmd)
	}
	// Before any rule, every source gets in everywhere.
	if code, out := sshVia(from2, "echo before-rules"); code != 0 || !strings.Contains(out, "before-rules") {
		t.Fatalf("ssh -J from 127.0.0.2 with no rule: exit %d\n%s", code, out)
	}
	if err := apiFrom("127.0.0.2", e.c.addr); err != nil {
		t.Fatalf("API from 127.0.0.2 with no rule: %v", err)
	}

	out := admin.must("admin", "network", "deny", "127.0.0.2", "--comment", "test source")
	if !strings.Contains(out, "deny 127.0.0.2/32 on all") {
		t.Fatalf("network deny printed %q", out)
	}
	rules := networkRules(t, admin)
	if len(rules) != 1 || rules[0].CIDR != "127.0.0.2/32" || rules[0].Listener != "all" || rules[0].Comment != "test source" {
		t.Fatalf("network ls = %+v", rules)
	}
	denyID := rules[0].ID

	t.Run("API", func(t *testing.T) {
		if err := apiFrom("127.0.0.2", e.c.addr); err == nil {
			t.Error("the API answered a denied source")
		}
		if err := apiFrom("127.0.0.3", e.c.addr); err != nil {
			t.Errorf("API from 127.0.0.3 (not denied): %v", err)
		}
		// The real client, its connections coming from 127.0.0.2.
		px := newSrcProxy(t, "127.0.0.2", e.c.addr)
		stranger := e.c.newUserHandle("alice", e.c.adminPW, newOTPSource("JBSWY3DPEHPK3PXP"))
		_, errOut, err := stranger.run("login", "--gateway", px.addr, "--ca-pin", e.c.pin, "--user", "alice",
			"--password-file", stranger.pwPath, "--otp", "000000")
		if err == nil || !strings.Contains(errOut, px.addr) || strings.Contains(errOut, "invalid") {
			t.Errorf("tunnel login from a denied source: %v, %q; want a refusal to connect naming the gateway", err, errOut)
		}
		t.Logf("tunnel login from a denied source: %s", strings.TrimSpace(errOut))
	})
	t.Run("QUIC", func(t *testing.T) {
		if err := quicFrom(t, "127.0.0.2", e.c.addr); !refusedByRules(err) {
			t.Errorf("QUIC from a denied source: %v; want CONNECTION_REFUSED", err)
		}
		if err := quicFrom(t, "127.0.0.3", e.c.addr); refusedByRules(err) {
			t.Errorf("QUIC from 127.0.0.3 (not denied) was refused by the rules: %v", err)
		}
	})
	t.Run("JumpHost", func(t *testing.T) {
		if code, out := sshVia(from2, "echo denied"); code == 0 || strings.Contains(out, "denied\n") {
			t.Errorf("ssh -J from a denied source: exit %d\n%s", code, out)
		}
		if code, out := sshVia(from3, "echo allowed"); code != 0 || !strings.Contains(out, "allowed") {
			t.Errorf("ssh -J from 127.0.0.3: exit %d\n%s", code, out)
		}
	})
	t.Run("RefusalsSummarised", func(t *testing.T) {
		for range 20 {
			_ = apiFrom("127.0.0.2", e.c.addr)
		}
		if n := strings.Count(e.c.log.String(), "refusing connections: source network not allowed"); n < 1 || n > 4 {
			t.Errorf("%d log lines about refused sources after 20+ refusals; want one per listener's burst", n)
		}
	})

	t.Run("AgentOverQUIC", func(t *testing.T) {
		// Denied on QUIC only: the agent enrols over the API, then its
		// QUIC connection (UDP, or over TCP where it falls back) is
		// refused, so it never comes online.
		admin.must("admin", "network", "deny", "127.0.0.4", "--listener", "quic")
		px := newSrcProxy(t, "127.0.0.4", e.c.addr)
		b := e.c.startAgentAt("web-5", filepath.Join(t.TempDir(), "agent"), px.addr, admin.token("web-5"), "expose: []\n")
		waitFor(t, 60*time.Second, "web-5 to enrol through the API", func() bool {
			_, enrolled := admin.agentsOnline()["web-5"]
			return enrolled
		})
		_ = b
		time.Sleep(5 * time.Second)
		if admin.agentsOnline()["web-5"] {
			t.Fatal("an agent on a source denied on QUIC came online")
		}
		waitFor(t, 30*time.Second, "the gateway to log the QUIC refusal", func() bool {
			l := e.c.log.String()
			return strings.Contains(l, "listener=QUIC") || strings.Contains(l, `"listener":"QUIC`)
		})
		// Lifting the rule lets it in.
		for _, r := range networkRules(t, admin) {
			if r.CIDR == "127.0.0.4/32" {
				admin.must("admin", "network", "rm", fmt.Sprint(r.ID))
			}
		}
		admin.waitOnline("web-5", true, 90*time.Second)
	})

	t.Run("LiveSessionCut", func(t *testing.T) {
		// A session through the jump host from 127.0.0.3, running; then
		// 127.0.0.3 is denied: the session ends within seconds.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "ssh", "-F", from3, "-J", e.jump(), e.login+"@web-1", "echo started; sleep 600")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr syncBuffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		n, err := stdout.Read(buf)
		if err != nil || !strings.Contains(string(buf[:n]), "started") {
			t.Fatalf("the session did not start: %q %v\n%s", buf[:n], err, stderr.String())
		}
		done := make(chan error, 1)
		go func() { _, _ = io.Copy(io.Discard, stdout); done <- cmd.Wait() }()
		admin.must("admin", "network", "deny", "127.0.0.3/32", "--listener", "ssh")
		select {
		case err := <-done:
			if err == nil {
				t.Error("the cut session exited 0")
			}
		case <-time.After(30 * time.Second):
			t.Fatal("a live SSH session from a newly denied source still runs 30s later")
		}
	})

	t.Run("AllowList", func(t *testing.T) {
		// The API admits only 127.0.0.0/29 now (the admin is 127.0.0.1);
		// the deny of 127.0.0.2 still wins inside it.
		admin.must("admin", "network", "allow", "127.0.0.0/29", "--listener", "api")
		if err := apiFrom("127.0.0.3", e.c.addr); err != nil {
			t.Errorf("API from 127.0.0.3 (in the allow-list): %v", err)
		}
		if err := apiFrom("127.0.0.9", e.c.addr); err == nil {
			t.Error("API from 127.0.0.9 (outside the allow-list) answered")
		}
		if err := apiFrom("127.0.0.2", e.c.addr); err == nil {
			t.Error("API from 127.0.0.2 (allowed, but denied) answered: deny must win")
		}
		// QUIC has no allow rule: 127.0.0.9 still gets past the rules.
		if err := quicFrom(t, "127.0.0.9", e.c.addr); refusedByRules(err) {
			t.Errorf("QUIC from 127.0.0.9 refused by an API allow-list: %v", err)
		}
	})

	t.Run("LockoutGuard", func(t *testing.T) {
		before := len(networkRules(t, admin))
		_, errOut, err := admin.run("admin", "network", "deny", "127.0.0.0/30", "--listener", "api")
		if err == nil || !strings.Contains(errOut, "would refuse your own address 127.0.0.1 on the API and lock you out") {
			t.Errorf("a deny of the admin's own address: %v, %q; want the lockout refusal", err, errOut)
		}
		// Removing the allow-list's only rule that admits the admin is
		// fine (no allow rule left: everyone not denied); a narrower
		// allow-list without the admin is refused.
		_, errOut, err = admin.run("admin", "network", "allow", "127.0.0.8/29", "--listener", "all")
		if err != nil {
			t.Errorf("an allow rule that keeps the admin's network: %v %s", err, errOut)
		}
		if got := len(networkRules(t, admin)); got != before+1 {
			t.Errorf("%d rules; want %d (the refused rule must not be recorded)", got, before+1)
		}
		_, errOut, err = admin.run("admin", "network", "deny", "127.0.0.1", "--listener", "quic")
		if err != nil {
			t.Errorf("a QUIC-only deny of the admin's address (the API stays open): %v %s", err, errOut)
		}
		// web-1's agent is connected over QUIC from 127.0.0.1: the new rule
		// cuts its live connection, and it stays out while the rule holds.
		if !waitAgentOnline(t, admin, "web-1", false, time.Minute) {
			t.Error("web-1's live QUIC connection from 127.0.0.1 still up a minute after a quic deny of 127.0.0.1")
		}
	})

	t.Run("Audited", func(t *testing.T) {
		admin.must("admin", "network", "rm", fmt.Sprint(denyID))
		// The other rules go too. Removing the API's allow-list first
		// would leave the allow rule of all listeners, which does not
		// admit the admin: refused. So that one goes first.
		for _, r := range networkRules(t, admin) {
			if r.Effect == "allow" && r.Listener == "api" {
				_, errOut, err := admin.run("admin", "network", "rm", fmt.Sprint(r.ID))
				if err == nil || !strings.Contains(errOut, "lock you out") {
					t.Errorf("removing the API allow-list that admits the admin, leaving one that does not: %v %q; want the lockout refusal", err, errOut)
				}
			}
		}
		for _, r := range networkRules(t, admin) {
			if r.Listener == "all" {
				admin.must("admin", "network", "rm", fmt.Sprint(r.ID))
			}
		}
		for _, r := range networkRules(t, admin) {
			admin.must("admin", "network", "rm", fmt.Sprint(r.ID))
		}
		var evs []struct {
			Type    string            `json:"type"`
			Actor   string            `json:"actor"`
			Details map[string]string `json:"details"`
		}
		if err := json.Unmarshal([]byte(admin.must("admin", "audit", "ls", "--type", "network.*", "--json")), &evs); err != nil {
			t.Fatal(err)
		}
		var added, removed int
		for _, ev := range evs {
			if ev.Actor != "alice" {
				t.Errorf("event %+v not by alice", ev)
			}
			switch ev.Type {
			case "network.rule_added":
				added++
			case "network.rule_removed":
				removed++
				if ev.Details["cidr"] == "" {
					t.Errorf("removal event without the rule: %+v", ev)
				}
			default:
				t.Errorf("--type network.* listed a %s event", ev.Type)
			}
		}
		if added != 6 || removed != 6 {
			t.Errorf("%d network.rule_added and %d network.rule_removed events; want one for every change (6 and 6)", added, removed)
		}
		// The rules are gone: web-1's agent comes back by itself, and
		// 127.0.0.2 is back in on the jump host.
		if !waitAgentOnline(t, admin, "web-1", true, 2*time.Minute) {
			t.Fatal("web-1 not back online two minutes after the network rules were removed")
		}
		if code, out := sshVia(from2, "echo back"); code != 0 {
			t.Errorf("ssh -J from 127.0.0.2 once its rule is removed: exit %d\n%s", code, out)
		}
	})
}

// TestNetworkRulesAcrossGateways: a rule added on one gateway is enforced
// by another on the same PostgreSQL within seconds, with no restart, and
// its removal too.
func TestNetworkRulesAcrossGateways(t *testing.T) {
	srv := pgtest.Start(t)
	dbs := newPGDatabases(t, srv)
	url := fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", srv.User, srv.Password, srv.Addr, dbs.create(t))
	gws := startSharedGateways(t, url, 2, "--heartbeat-interval", "1s", "--reconcile-interval", "60s", "--login-burst", "1000")
	admin := gws[0].adminUser()
	admin.login()
	if err := apiFrom("127.0.0.2", gws[1].addr); err != nil {
		t.Fatalf("gateway 2's API from 127.0.0.2 before any rule: %v", err)
	}
	admin.must("admin", "network", "deny", "127.0.0.2/32")
	start := time.Now()
	waitFor(t, 20*time.Second, "gateway 2 to refuse 127.0.0.2", func() bool { return apiFrom("127.0.0.2", gws[1].addr) != nil })
	t.Logf("rule enforced by the other gateway %s after it was added", time.Since(start).Round(time.Millisecond))
	if err := quicFrom(t, "127.0.0.2", gws[1].addr); !refusedByRules(err) {
		t.Errorf("QUIC to gateway 2 from the denied source: %v; want CONNECTION_REFUSED", err)
	}
	if err := apiFrom("127.0.0.3", gws[1].addr); err != nil {
		t.Errorf("gateway 2's API from 127.0.0.3: %v", err)
	}
	// A live connection to gateway 2 from a source then denied on
	// gateway 1 is cut by gateway 2.
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.3")}, Timeout: 10 * time.Second}
	live, err := tls.DialWithDialer(d, "tcp", gws[1].addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("TLS to gateway 2 from 127.0.0.3: %v", err)
	}
	defer live.Close()
	admin.must("admin", "network", "deny", "127.0.0.3/32", "--listener", "api")
	_ = live.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := live.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a live API connection to gateway 2 from a source denied on gateway 1: read %v; want it cut", err)
	}
	for _, r := range networkRules(t, admin) {
		if r.CIDR == "127.0.0.3/32" {
			admin.must("admin", "network", "rm", fmt.Sprint(r.ID))
		}
	}
	id := networkRules(t, admin)[0].ID
	admin.must("admin", "network", "rm", fmt.Sprint(id))
	waitFor(t, 20*time.Second, "gateway 2 to admit 127.0.0.2 again", func() bool { return apiFrom("127.0.0.2", gws[1].addr) == nil })
}

// waitAgentOnline polls until agent's online state is want, up to timeout,
// and reports whether it got there.
func waitAgentOnline(t *testing.T, admin *user, agent string, want bool, timeout time.Duration) bool {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(200 * time.Millisecond) {
		if admin.agentsOnline()[agent] == want {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
