package integration

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/tunnelhq/tunnel/certs"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/transport"
	"github.com/tunnelhq/tunnel/pkg/trust"
)

// TestTunnelFaults kills the gateway in the middle of a relayed transfer
// (app-1 has direct: off; a direct stream outlives the gateway, see
// TestDirectPath) and an agent, and checks that nothing ends silently and
// everything comes back.
func TestTunnelFaults(t *testing.T) {
	e := newTunnelEnvWith(t, "direct: off\n")

	// An engineer's tunnel proxy, connected, then idle across the SIGKILL.
	e.admin.must("admin", "roles", "add", "echoer", "--service", "db-1/echo")
	carol := addUser(t, e.admin, "carol", "echoer")
	carol.login()
	proxyPort := freeLoopbackPort(t)
	proxyAddr := fmt.Sprintf("127.0.0.1:%d", proxyPort)
	_, proxyOut := carol.backgroundOut("proxy", "db", "db-1/echo", "--port", fmt.Sprint(proxyPort))
	dialRetry(t, proxyAddr, echoOnce, 30*time.Second)

	// SIGKILL the gateway during a 100 MiB download: the client must see
	// an error, never a clean end of a truncated stream.
	c, err := net.Dial("tcp", e.sourceAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(90 * time.Second))
	if _, err := io.CopyN(io.Discard, c, 4<<20); err != nil {
		t.Fatalf("first 4 MiB: %v", err)
	}
	_ = e.c.cmd.Process.Signal(syscall.SIGKILL)
	<-e.c.done
	killed := time.Now()
	e.c.restart()
	n, err := io.Copy(io.Discard, c)
	if err == nil {
		t.Fatalf("after the gateway was killed the download ended cleanly after %d more bytes; want an error", n)
	}
	if 4<<20+n >= sourceSize {
		t.Errorf("the whole download arrived although the gateway was killed")
	}
	t.Logf("client saw: %v (after %d more bytes)", err, n)

	// The agents reconnect to the restarted gateway by themselves.
	start := time.Now()
	dialRetry(t, e.echoAddr, echoOnce, 30*time.Second)
	t.Logf("new connections work %s after the restart", time.Since(start).Round(time.Millisecond))

	// carol's proxy still holds its connection to the killed gateway,
	// which the restarted one no longer knows. Once that connection has
	// heard nothing for transport.Silence (seen within a beat), the next
	// local connection goes on a new connection to the gateway instead of
	// into the dead one (where the restarted gateway would reset it, or it
	// would wait for the idle timeout): the first one works.
	time.Sleep(time.Until(killed.Add(transport.Silence(transport.Beat) + 2*transport.Beat)))
	if c, err := net.Dial("tcp", proxyAddr); err != nil {
		t.Errorf("tunnel proxy after the restart: %v\n%s", err, proxyOut())
	} else {
		// A generous deadline: the connection may wait, it must not fail.
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
		if err := echoOn(c); err != nil {
			t.Errorf("the first connection through an idle tunnel proxy after its gateway was killed and restarted: %v\n%s", err, proxyOut())
		}
		c.Close()
	}

	// SIGKILL the database agent: it shows as offline; restarted without a
	// token, it reconnects with its stored identity.
	e.db.kill()
	e.admin.waitOnline("db-1", false, 40*time.Second)
	c2, err := net.Dial("tcp", e.echoAddr)
	if err == nil {
		if echoOnce(c2) == nil {
			t.Error("echo worked through an agent that was killed")
		}
		c2.Close()
	}
	e.db.start("")
	e.admin.waitOnline("db-1", true, 30*time.Second)
	dialRetry(t, e.echoAddr, echoOnce, 20*time.Second)
}

// restart starts the gateway again on the same address and data.
func (c *cluster) restart() {
	c.t.Helper()
	c.start("--api-addr", c.addr, "--login-burst", "1000")
}

// TestTunnelRefusals checks that streams no rule allows, foreign and
// expired certificates, and reused join tokens are each refused with a
// clear message, and that nothing reaches the service behind.
func TestTunnelRefusals(t *testing.T) {
	e := newTunnelEnv(t)

	t.Run("no allow rule", func(t *testing.T) {
		// The refusal resets the connection as soon as the gateway answers,
		// which on a loaded machine can be before the client's connect or
		// write returns. The kernel reports a reset once: to that call, and a
		// read after it sees a plain end. So every call is checked.
		err := func() error {
			c, err := net.Dial("tcp", e.canaryAddr)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write([]byte("DROP TABLE users;")); err != nil {
				return err
			}
			_, err = io.ReadAll(c)
			return err
		}()
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("a denied stream ended with %v; want a connection reset", err)
		}
		if n := e.canary.accepted.Load(); n != 0 {
			t.Errorf("the service behind accepted %d connections; want 0", n)
		}
		waitFor(t, 5*time.Second, "the app agent's log to say why the stream was refused", func() bool {
			return strings.Contains(e.app.log.String(), "no rule allows app-1 to reach db-1/canary")
		})
		if !strings.Contains(e.admin.must("admin", "audit", "ls"), "stream.denied") {
			t.Error("the audit log has no stream.denied event")
		}
	})

	t.Run("reused join token", func(t *testing.T) {
		tok := e.admin.token("web-1")
		first := e.c.startAgent("web-1", tok, "")
		e.admin.waitOnline("web-1", true, 20*time.Second)
		second := e.c.startAgent("web-1", tok, "")
		err, log := second.wait(30 * time.Second)
		if err == nil || !strings.Contains(log, "already used") {
			t.Errorf("second enrolment with the same token: %v\n%s\nwant a refusal saying the token was already used", err, log)
		}
		first.stop()
	})

	t.Run("agent certificate from another CA", func(t *testing.T) {
		foreign, err := certs.Generate(certs.Config{Cluster: e.c.name})
		if err != nil {
			t.Fatal(err)
		}
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		leaf, err := foreign.IssueX509Client(certs.X509Request{ID: identity.ID{Cluster: e.c.name, Kind: identity.Agent, Name: "db-1"}, PublicKey: pub})
		if err != nil {
			t.Fatal(err)
		}
		cert := &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: priv, Leaf: leaf}
		host, _, _ := net.SplitHostPort(e.c.addr)
		tlsConf := transport.ClientTLS(trust.PinnedClientConfig(e.c.pin, host, nil),
			func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil })
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		conn, err := quic.DialAddr(ctx, e.c.addr, tlsConf, transport.QUICConfig())
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		_, err = conn.AcceptStream(ctx)
		var ae *quic.ApplicationError
		if !errors.As(err, &ae) || ae.ErrorCode != transport.CodeUnauthorized || !strings.Contains(ae.ErrorMessage, "not issued by this cluster") {
			t.Errorf("connection with a foreign certificate: %v; want it closed as unauthorized, 'not issued by this cluster'", err)
		}
	})

	t.Run("expired user certificate", func(t *testing.T) {
		e.admin.must("admin", "roles", "add", "dba", "--service", "db-1/echo")
		bob := addUser(t, e.admin, "bob", "dba")
		bob.login("--ttl", "6s")
		if out := bob.must("ls"); !strings.Contains(out, "db-1") || !strings.Contains(out, "echo") {
			t.Errorf("tunnel ls for bob:\n%s\nwant db-1 with echo", out)
		}
		port := freeLoopbackPort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cmd := exec.Command(bin("tunnel"), "proxy", "db", "db-1/echo", "--port", fmt.Sprint(port))
		cmd.Env = append(cleanEnv(), "TUNNEL_HOME="+bob.home)
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		defer func() { cmd.Process.Kill(); <-done }()
		dialRetry(t, addr, echoOnce, 5*time.Second)
		select {
		case err := <-done:
			done <- err
			t.Fatalf("tunnel proxy exited while the certificate was valid: %v\n%s", err, out.String())
		default:
		}
		select {
		case err := <-done:
			done <- err
			if err == nil || !strings.Contains(out.String(), "certificate expired") {
				t.Errorf("tunnel proxy after expiry: %v\n%s\nwant it to stop saying the certificate expired", err, out.String())
			}
		case <-time.After(20 * time.Second):
			t.Errorf("tunnel proxy still runs after the certificate expired:\n%s", out.String())
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			if echoOnce(c) == nil {
				t.Error("a connection worked after the certificate expired")
			}
			c.Close()
		}
	})
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
