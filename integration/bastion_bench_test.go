package integration

// Bastion benchmarks: how fast revocation cuts a live stream (an SSH
// session, a tunnel stream), and what a bastion SSH command costs end to
// end beside OpenSSH straight to a local sshd in the same run. They drive
// the real binaries like the tests do and run only with -bench; nothing
// asserts on timing.
//
//	CI=1 go test -run '^$' -bench 'BenchmarkRevoke|BenchmarkSSHTrue' -benchtime 100x ./integration/
//
// Percentiles are nearest-rank over the trials (p99 of 100 trials is the
// 99th smallest).

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/client/profile"
	"github.com/tunnelhq/tunnel/integration/internal/sshdtest"
	"github.com/tunnelhq/tunnel/integration/internal/testenv"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/apiclient"
)

// bbEnv is one gateway (login rate limits lifted), its admin (CLI and an
// API client with the admin's certificate) and one agent, web-1.
type bbEnv struct {
	c     *cluster
	admin *user
	api   *apiclient.Client
	login string // the current OS user: the login the roles grant on web-*
	web   *agentProc
}

// bbStart starts the gateway, logs the admin in, runs setup (roles) and
// starts web-1 with agentYAML.
func bbStart(b *testing.B, agentYAML string, setup func(e *bbEnv)) *bbEnv {
	b.Helper()
	e := &bbEnv{login: testenv.CurrentUser(b)}
	e.c = startCluster(b, "--login-burst", "100000", "--login-rate", "100000", "--log-level", "info")
	e.admin = e.c.adminUser()
	e.admin.login()
	cert, err := profile.Dir{Path: e.admin.home}.TLSCertificate()
	if err != nil {
		b.Fatal(err)
	}
	e.api, err = apiclient.New(apiclient.Config{Gateway: e.c.addr, Pin: e.c.pin, Cert: &cert})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.api.Close)
	if setup != nil {
		setup(e)
	}
	e.web = e.c.startAgent("web-1", e.admin.token("web-1"), agentYAML)
	e.admin.waitOnline("web-1", true, 20*time.Second)
	return e
}

// addUser creates a user with roles through the admin API and returns a
// handle with the user's own TOTP secret (so logins never replay).
func (e *bbEnv) addUser(b *testing.B, name string, roles ...string) *user {
	b.Helper()
	pw := name + "-password-long-enough"
	var enr api.Enrollment
	if err := e.api.Do(context.Background(), http.MethodPost, api.PathUsers, nil,
		api.CreateUserRequest{Name: name, Roles: roles, Password: pw}, &enr); err != nil {
		b.Fatalf("create user %s: %v", name, err)
	}
	return e.c.newUserHandle(name, pw, newOTPSource(enr.Secret))
}

// activeSessions lists the active sessions of user (admin API).
func (e *bbEnv) activeSessions(b *testing.B, user string) []api.Session {
	b.Helper()
	var list []api.Session
	q := url.Values{"active": {"1"}, "user": {user}}
	if err := e.api.Do(context.Background(), http.MethodGet, api.PathAdminSessions, q, nil, &list); err != nil {
		b.Fatalf("list sessions: %v", err)
	}
	return list
}

// waitRecording waits until session id of user has a stored recording;
// false if it has none after timeout.
func (e *bbEnv) waitRecording(b *testing.B, user, id string, timeout time.Duration) bool {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var list []api.Session
		q := url.Values{"user": {user}}
		if err := e.api.Do(context.Background(), http.MethodGet, api.PathAdminSessions, q, nil, &list); err != nil {
			b.Fatalf("list sessions: %v", err)
		}
		for _, s := range list {
			if s.ID == id && s.Recording {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// bbLogTime returns the time= of the first slog line holding all of
// words (millisecond resolution).
func bbLogTime(log string, words ...string) (time.Time, bool) {
next:
	for _, line := range strings.Split(log, "\n") {
		for _, w := range words {
			if !strings.Contains(line, w) {
				continue next
			}
		}
		f, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		t, err := time.Parse(time.RFC3339Nano, f)
		return t, err == nil
	}
	return time.Time{}, false
}

// tunnelCmd is the CLI as u, not started.
func (u *user) tunnelCmd(args ...string) *exec.Cmd {
	cmd := exec.Command(bin("tunnel"), args...)
	cmd.Env = append(cleanEnv(), "TUNNEL_HOME="+u.home)
	return cmd
}

// bbReader reads r to its end as fast as it can and records when bytes
// arrive.
type bbReader struct {
	base    time.Time
	first   chan struct{} // closed at the first byte
	done    chan struct{} // closed when r ends
	last    atomic.Int64  // arrival of the latest byte, ns since base (0: none yet)
	total   atomic.Int64
	endErr  error
	endedAt time.Time
}

func bbRead(r io.Reader) *bbReader {
	br := &bbReader{base: time.Now(), first: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(br.done)
		buf := make([]byte, 256<<10)
		var once sync.Once
		for {
			n, err := r.Read(buf)
			if n > 0 {
				br.last.Store(int64(time.Since(br.base)))
				br.total.Add(int64(n))
				once.Do(func() { close(br.first) })
			}
			if err != nil {
				br.endErr = err
				br.endedAt = time.Now()
				return
			}
		}
	}()
	return br
}

// lastAt is the arrival time of the latest byte (zero time if none).
func (br *bbReader) lastAt() time.Time {
	ns := br.last.Load()
	if ns == 0 {
		return time.Time{}
	}
	return br.base.Add(time.Duration(ns))
}

// bbWarmup is how long a stream flows before it is revoked, so that
// every buffer on the way is in its steady state.
const bbWarmup = 100 * time.Millisecond

// bbStats collects one measurement per trial.
type bbStats map[string][]time.Duration

func (s bbStats) add(name string, d time.Duration) { s[name] = append(s[name], d) }

// pct is the nearest-rank percentile p (0 < p <= 100) of name.
func (s bbStats) pct(name string, p float64) time.Duration {
	v := slices.Clone(s[name])
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	i := int(math.Ceil(p/100*float64(len(v)))) - 1
	return v[max(0, min(i, len(v)-1))]
}

// report reports p50, p99 and max of name as NAME-p50-ms etc. (prefix ""
// gives p50-ms).
func (s bbStats) report(b *testing.B, name, prefix string) {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(s.pct(name, 50)), prefix+"p50-ms")
	b.ReportMetric(ms(s.pct(name, 99)), prefix+"p99-ms")
	b.ReportMetric(ms(s.pct(name, 100)), prefix+"max-ms")
}

func (s bbStats) log(b *testing.B, names ...string) {
	if b.N == 1 {
		return // the framework's probe run; benchmark output keeps few lines
	}
	var sb strings.Builder
	for _, n := range names {
		fmt.Fprintf(&sb, "\n  %-28s n=%d p50=%v p90=%v p99=%v max=%v", n, len(s[n]),
			s.pct(n, 50), s.pct(n, 90), s.pct(n, 99), s.pct(n, 100))
	}
	b.Logf("N=%d:%s", b.N, sb.String())
}

func sinceOrZero(t, t0 time.Time) time.Duration {
	if t.IsZero() || t.Before(t0) {
		return 0
	}
	return t.Sub(t0)
}

// BenchmarkRevokeSessionLastByte: an SSH session streams `cat /dev/zero`
// to the user's stdout as fast as it can (for bbWarmup); an admin revokes
// the session (POST /v1/admin/sessions/{id}/revoke). It measures, from
// just before the request (t0), the arrival of the last data byte on the
// `tunnel ssh` process's stdout (p50/p99-ms; 0 when nothing arrived after
// t0, counted in zero-trials). stdout carries only the remote command's
// output: the revocation message goes to stderr, so every byte counted is
// a data byte, including those already in flight at t0 (after-*-MiB).
//
// Also reported: when the revocation message reached stderr (msg-), when
// `tunnel ssh` exited (exit-), the revoke request's round trip (api-), and
// trials where the message never arrived (lost-msg-trials). The log adds
// node-end: when the agent logged "ending ssh connection" (ms resolution,
// after it wrote the message). The gateway keeps an ended session's stream
// open sshGrace (500 ms) for the node's message; the node itself ends the
// session on the control message, so the data stops well before that.
// Between trials the benchmark waits, untimed, until the session's
// recording is stored (no-recording-trials counts the ones that never were).
func BenchmarkRevokeSessionLastByte(b *testing.B) {
	testenv.LookPath(b, "cat")
	e := bbStart(b, "", func(e *bbEnv) {
		e.admin.must("admin", "roles", "add", "ops", "--login", e.login, "--node", "web-*", "--max-ttl", "2h")
	})
	bob := e.addUser(b, "bob", "ops")
	bob.login()

	st := bbStats{}
	var zero, lost, noRec, bytesTotal int64
	var after []int64 // bytes that arrived after t0
	var lostSample string
	b.ResetTimer()
	for i := range b.N {
		cmd := bob.tunnelCmd("ssh", e.login+"@web-1", "cat /dev/zero")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		stderr := &bbFirstMatch{want: []byte("revoked")}
		cmd.Stderr = stderr
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = cmd.Process.Kill() })
		rd := bbRead(stdout)
		select {
		case <-rd.first:
		case <-rd.done:
			_ = cmd.Wait()
			b.Fatalf("trial %d: tunnel ssh ended before any byte: %v\nstderr: %s", i, rd.endErr, stderr.String())
		case <-time.After(20 * time.Second):
			b.Fatalf("trial %d: no byte from tunnel ssh within 20s\nstderr: %s", i, stderr.String())
		}
		time.Sleep(bbWarmup) // let the stream reach its steady state
		list := e.activeSessions(b, "bob")
		if len(list) != 1 {
			b.Fatalf("trial %d: bob has %d active sessions; want 1: %+v", i, len(list), list)
		}
		t0 := time.Now()
		pre := t0.Sub(rd.lastAt())
		before := rd.total.Load()
		if err := e.api.Do(context.Background(), http.MethodPost, api.PathAdminSessions+"/"+list[0].ID+"/revoke", nil, nil, nil); err != nil {
			b.Fatalf("trial %d: revoke: %v", i, err)
		}
		apiDone := time.Now()
		select {
		case <-rd.done:
		case <-time.After(15 * time.Second):
			b.Fatalf("trial %d: tunnel ssh still streams 15s after the revocation (%d bytes)", i, rd.total.Load())
		}
		werr := cmd.Wait()
		exited := time.Now()
		var ee *exec.ExitError
		if werr == nil || !errors.As(werr, &ee) {
			b.Fatalf("trial %d: tunnel ssh ended with %v after the revocation, stderr %q; want it cut", i, werr, stderr.String())
		}
		if !strings.Contains(stderr.String(), "access revoked") {
			// The session was cut, but the node's message did not reach
			// the user (see lost-msg): counted, and the timing still holds.
			lost++
			if lostSample == "" {
				lostSample = fmt.Sprintf("trial %d: exit %d, stderr %q", i, ee.ExitCode(), stderr.String())
			}
		} else {
			st.add("msg", sinceOrZero(stderr.at(), t0))
		}
		last := sinceOrZero(rd.lastAt(), t0)
		if last == 0 {
			zero++
		}
		st.add("last-byte", last)
		st.add("exit", exited.Sub(t0))
		after = append(after, rd.total.Load()-before)
		if at, ok := bbLogTime(e.web.log.String(), "ending ssh connection", "session="+list[0].ID); ok {
			st.add("node-end", sinceOrZero(at, t0))
		}
		st.add("api", apiDone.Sub(t0))
		st.add("pre-gap", pre)
		bytesTotal += rd.total.Load()

		// The agent uploads the session's recording (every byte of
		// output, as asciicast) when it ends; the gateway seals it and
		// writes it to the store, which is the store writer the next
		// revocation needs. Wait for it, so trials do not overlap.
		if !e.waitRecording(b, "bob", list[0].ID, 30*time.Second) {
			noRec++
		}
	}
	b.StopTimer()
	st.report(b, "last-byte", "")
	st.report(b, "msg", "msg-")
	st.report(b, "exit", "exit-")
	st.report(b, "api", "api-")
	b.ReportMetric(float64(zero), "zero-trials")
	b.ReportMetric(float64(lost), "lost-msg-trials")
	b.ReportMetric(float64(noRec), "no-recording-trials")
	b.ReportMetric(float64(bytesTotal)/float64(b.N)/(1<<20), "MiB/trial")
	slices.Sort(after)
	b.ReportMetric(float64(after[len(after)/2])/(1<<20), "after-p50-MiB")
	b.ReportMetric(float64(after[len(after)-1])/(1<<20), "after-max-MiB")
	st.log(b, "last-byte", "msg", "exit", "api", "node-end", "pre-gap")
	if lost > 0 && b.N > 1 {
		b.Logf("%d of %d trials ended without the revocation message on stderr; first: %s", lost, b.N, lostSample)
	}
}

// bbFirstMatch is a stderr that records when want first appeared.
type bbFirstMatch struct {
	want []byte
	mu   sync.Mutex
	buf  bytes.Buffer
	when time.Time
}

func (w *bbFirstMatch) Write(p []byte) (int, error) {
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.when.IsZero() && bytes.Contains(w.buf.Bytes(), w.want) {
		w.when = now
	}
	return len(p), nil
}

func (w *bbFirstMatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func (w *bbFirstMatch) at() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.when
}

// zeroHandler writes zeros until the connection fails.
func zeroHandler(c net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}

// BenchmarkRevokeUserStreamLastByte: the data-plane case. web-1 exposes
// "source", a TCP service that writes zeros forever; per trial a fresh
// user (created and logged in before the trials) runs `tunnel proxy db
// web-1/source --port P` and a TCP client reads from 127.0.0.1:P as fast
// as it can. An admin locks the user (POST /v1/admin/users/NAME/lock);
// measured from just before the request (t0): the arrival of the last
// byte at the TCP client (p50/p99-ms), when its read ended (end-), and the
// lock request's own round trip (api-).
func BenchmarkRevokeUserStreamLastByte(b *testing.B) {
	src := serve(b, zeroHandler)
	e := bbStart(b, "expose:\n  - {name: source, address: "+src.addr()+"}\n", func(e *bbEnv) {
		e.admin.must("admin", "roles", "add", "streamer", "--service", "web-1/source", "--max-ttl", "2h")
	})
	users := make([]*user, b.N)
	for i := range b.N {
		users[i] = e.addUser(b, fmt.Sprintf("stream%d", i), "streamer")
		users[i].login()
	}

	st := bbStats{}
	var zero, bytesTotal int64
	b.ResetTimer()
	for i := range b.N {
		u := users[i]
		port := freeLoopbackPort(b)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cmd := u.tunnelCmd("proxy", "db", "web-1/source", "--port", fmt.Sprint(port))
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = cmd.Process.Kill() })
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()

		// Connect once the proxy listens and bytes flow (the first streams
		// may be refused while the QUIC connection comes up).
		var conn net.Conn
		var rd *bbReader
		deadline := time.Now().Add(20 * time.Second)
		for rd == nil {
			if time.Now().After(deadline) {
				b.Fatalf("trial %d: no byte through %s within 20s\nproxy: %s", i, addr, out.String())
			}
			select {
			case err := <-exited:
				b.Fatalf("trial %d: tunnel proxy exited: %v\n%s", i, err, out.String())
			default:
			}
			if !strings.Contains(out.String(), "Listening on") {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			c, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			r := bbRead(c)
			select {
			case <-r.first:
				conn, rd = c, r
			case <-r.done:
				c.Close()
				time.Sleep(50 * time.Millisecond)
			case <-time.After(5 * time.Second):
				c.Close()
				<-r.done
			}
		}

		time.Sleep(bbWarmup)
		t0 := time.Now()
		pre := t0.Sub(rd.lastAt())
		if err := e.api.Do(context.Background(), http.MethodPost, api.PathUsers+"/"+u.name+"/lock", nil, nil, nil); err != nil {
			b.Fatalf("trial %d: lock %s: %v", i, u.name, err)
		}
		apiDone := time.Now()
		select {
		case <-rd.done:
		case <-time.After(15 * time.Second):
			b.Fatalf("trial %d: the stream still flows 15s after the lock (%d bytes)", i, rd.total.Load())
		}
		conn.Close()
		last := sinceOrZero(rd.lastAt(), t0)
		if last == 0 {
			zero++
		}
		st.add("last-byte", last)
		st.add("end", rd.endedAt.Sub(t0))
		st.add("api", apiDone.Sub(t0))
		st.add("pre-gap", pre)
		bytesTotal += rd.total.Load()

		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	b.StopTimer()
	st.report(b, "last-byte", "")
	st.report(b, "end", "end-")
	st.report(b, "api", "api-")
	b.ReportMetric(float64(zero), "zero-trials")
	b.ReportMetric(float64(bytesTotal)/float64(b.N)/(1<<20), "MiB/trial")
	st.log(b, "last-byte", "end", "api", "pre-gap")
}

// BenchmarkSSHTrue: `tunnel ssh LOGIN@web-1 true` end to end (process
// start to exit, the user already logged in: a session request over
// HTTPS, a QUIC connection to the gateway, SSH to the node's agent, which
// runs the login's shell with -c true), interleaved trial by trial with
// OpenSSH's `ssh LOGIN@127.0.0.1 true` straight to a local sshd trusting
// a user CA made here (ssh-: sshdtest's configuration as is).
//
// A second baseline (ssh-lean-) takes out two costs that are not the
// protocol's: OpenSSH's default sntrup761x25519 key exchange (the client
// is told to use curve25519-sha256), and the login's ~/.bashrc, which
// Debian's bash reads for `bash -c` when it sees SSH_CLIENT (the agent's
// sshd does not set it); its sshd sets SHLVL=1, which makes bash skip it.
func BenchmarkSSHTrue(b *testing.B) {
	sshPath := testenv.LookPath(b, "ssh")
	e := bbStart(b, "", func(e *bbEnv) {
		e.admin.must("admin", "roles", "add", "ops", "--login", e.login, "--node", "web-*", "--max-ttl", "2h")
	})
	bob := e.addUser(b, "bob", "ops")
	bob.login()

	// Local sshds and a certificate for the current OS user.
	caPub, caPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	caSigner, err := ssh.NewSignerFromKey(caPriv)
	if err != nil {
		b.Fatal(err)
	}
	caKey, err := ssh.NewPublicKey(caPub)
	if err != nil {
		b.Fatal(err)
	}
	userPub, userPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	userKey, err := ssh.NewPublicKey(userPub)
	if err != nil {
		b.Fatal(err)
	}
	cert := &ssh.Certificate{Key: userKey, CertType: ssh.UserCert, KeyId: "bench", ValidPrincipals: []string{e.login},
		ValidAfter: uint64(time.Now().Add(-time.Minute).Unix()), ValidBefore: uint64(time.Now().Add(4 * time.Hour).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{"permit-pty": ""}}}
	if err := cert.SignCert(rand.Reader, caSigner); err != nil {
		b.Fatal(err)
	}
	keyFile, certFile := sshdtest.WriteIdentity(b, userPriv, cert)
	srv := sshdtest.Start(b, sshdtest.Config{TrustedUserCAKeys: []ssh.PublicKey{caKey}})
	lean := sshdtest.Start(b, sshdtest.Config{TrustedUserCAKeys: []ssh.PublicKey{caKey}, ExtraConfig: []string{"SetEnv SHLVL=1"}})
	sshArgs := append(srv.SSHArgs(keyFile, certFile), e.login+"@127.0.0.1", "true")
	leanArgs := append(lean.SSHArgs(keyFile, certFile), "-o", "KexAlgorithms=curve25519-sha256", e.login+"@127.0.0.1", "true")

	timed := func(what string, cmd *exec.Cmd) time.Duration {
		var so, se bytes.Buffer
		cmd.Stdout, cmd.Stderr = &so, &se
		start := time.Now()
		err := cmd.Run()
		d := time.Since(start)
		if err != nil {
			b.Fatalf("%s: %v\nstdout: %s\nstderr: %s", what, err, so.String(), se.String())
		}
		return d
	}
	runs := []struct {
		name string
		run  func() time.Duration
	}{
		{"tunnel", func() time.Duration {
			return timed("tunnel ssh true", bob.tunnelCmd("ssh", e.login+"@web-1", "true"))
		}},
		{"ssh", func() time.Duration { return timed("ssh true", exec.Command(sshPath, sshArgs...)) }},
		{"ssh-lean", func() time.Duration { return timed("ssh (lean) true", exec.Command(sshPath, leanArgs...)) }},
	}
	// One of each untimed, so none pays for a cold page cache.
	for _, r := range runs {
		r.run()
	}

	st := bbStats{}
	b.ResetTimer()
	for i := range b.N {
		// Rotate the order so no variant always follows the same one.
		for k := range runs {
			r := runs[(i+k)%len(runs)]
			st.add(r.name, r.run())
		}
	}
	b.StopTimer()
	for _, r := range runs {
		st.report(b, r.name, r.name+"-")
	}
	st.log(b, "tunnel", "ssh", "ssh-lean")
}
