package sshd

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	gliderssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/pkg/panics"
)

// session is one "session" channel: a shell, a command or a subsystem.
type session struct {
	c      *conn
	g      *grant
	ch     gossh.Channel
	log    *slog.Logger
	ctx    context.Context // ends with the channel or the connection
	cancel context.CancelFunc

	// Touched only by the request loop.
	env     []string
	started bool

	mu        sync.Mutex // guards the fields below
	pty       *ptyRequest
	ptmx      *os.File
	proc      *os.Process
	rec       *recording
	agentSock string

	wg sync.WaitGroup // the program and its I/O
}

type ptyRequest struct {
	Term          string
	Columns, Rows uint32
	Width, Height uint32
	Modes         string
}

type windowChange struct {
	Columns, Rows uint32
	Width, Height uint32
}

// handleSession is the channel handler for "session" channels. gliderlabs'
// own session handler is not used: it accepts agent forwarding
// unconditionally, rewrites PTY output and leaves its goroutines unowned.
func (c *conn) handleSession(_ *gliderssh.Server, sc *gossh.ServerConn, nc gossh.NewChannel, ctx gliderssh.Context) {
	// gliderlabs starts this goroutine: a panic here ends this connection,
	// not the agent.
	defer panics.Recover(c.log, "agent SSH session channel", c.abort)
	if !c.enter() {
		_ = nc.Reject(gossh.ResourceShortage, "the connection is closing")
		return
	}
	defer c.wg.Done()
	g := c.identity(ctx)
	if g == nil {
		_ = nc.Reject(gossh.Prohibited, "not authenticated")
		return
	}
	c.mu.Lock()
	if c.sshConn == nil {
		c.sshConn = sc
	}
	c.mu.Unlock()
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	s := &session{c: c, g: g, ch: ch, log: c.log.With("session", g.sess.ID)}
	s.ctx, s.cancel = context.WithCancel(c.ctx)
	c.addChan(s, true)
	defer c.addChan(s, false)
	s.serve(reqs)
}

// serve answers the channel's requests until the channel closes, then stops
// the program and waits for it.
func (s *session) serve(reqs <-chan *gossh.Request) {
	for req := range reqs {
		ok, start := s.handle(req)
		if req.WantReply {
			_ = req.Reply(ok, nil)
		}
		if ok && start != nil {
			s.started = true
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer panics.Recover(s.log, "agent SSH session program", s.c.abort)
				s.finish(start())
			}()
		}
	}
	s.cancel()
	s.wg.Wait()
	_ = s.ch.Close()
}

// handle answers one request; start, if not nil, runs the program once the
// reply has been sent.
func (s *session) handle(req *gossh.Request) (ok bool, start func() error) {
	switch req.Type {
	case "pty-req":
		var p ptyRequest
		if s.started || s.pty != nil || gossh.Unmarshal(req.Payload, &p) != nil {
			return false, nil
		}
		if !s.g.can("permit-pty") {
			fmt.Fprintf(s.ch.Stderr(), "tunnel: the certificate does not permit a terminal\r\n")
			return false, nil
		}
		s.mu.Lock()
		s.pty = &p
		s.mu.Unlock()
		return true, nil
	case "window-change":
		var w windowChange
		if gossh.Unmarshal(req.Payload, &w) != nil {
			return false, nil
		}
		s.resize(w)
		return true, nil
	case "env":
		var kv struct{ Name, Value string }
		if s.started || gossh.Unmarshal(req.Payload, &kv) != nil || !envAllowed(s.c.srv.envAllow, kv.Name) {
			return false, nil
		}
		s.env = append(s.env, kv.Name+"="+kv.Value)
		return true, nil
	case "shell":
		if s.started {
			return false, nil
		}
		return true, func() error { return s.runShell("") }
	case "exec":
		var cmd struct{ Command string }
		if s.started || gossh.Unmarshal(req.Payload, &cmd) != nil {
			return false, nil
		}
		return true, func() error { return s.runShell(cmd.Command) }
	case "subsystem":
		var sub struct{ Name string }
		if s.started || gossh.Unmarshal(req.Payload, &sub) != nil || sub.Name != "sftp" {
			return false, nil
		}
		return true, s.runSFTP
	case "signal":
		var sig struct{ Signal string }
		if gossh.Unmarshal(req.Payload, &sig) == nil {
			s.signal(sig.Signal)
		}
		return true, nil
	case "auth-agent-req@openssh.com":
		if s.started || !s.g.sess.AllowAgentForwarding || !s.g.can("permit-agent-forwarding") {
			return false, nil
		}
		sock, err := s.c.agentSocket(s.g)
		if err != nil {
			s.log.Warn("agent forwarding failed", "err", err)
			return false, nil
		}
		s.mu.Lock()
		s.agentSock = sock
		s.mu.Unlock()
		return true, nil
	default: // x11-req among others
		return false, nil
	}
}

// finish reports how the program ended and closes the channel. When the
// connection is ending, it does neither: the client exits with 255 after
// the reason it was shown. The channel stays open for shutdown, which writes
// the reason to it and then closes the connection; closing the channel here
// could come first (the program ends as soon as the connection's context is
// cancelled), and the reason would be lost.
func (s *session) finish(err error) {
	if s.c.ctx.Err() == nil {
		status, signal := exitStatus(err)
		if signal != "" {
			_, _ = s.ch.SendRequest("exit-signal", false, gossh.Marshal(struct {
				Signal     string
				CoreDumped bool
				Message    string
				Lang       string
			}{Signal: signal}))
		} else {
			_, _ = s.ch.SendRequest("exit-status", false, gossh.Marshal(struct{ Status uint32 }{status}))
		}
		_ = s.ch.CloseWrite()
		_ = s.ch.Close()
	}
}

// notify tells the client why the connection ends: on stderr, starting on a
// fresh line of the terminal when there is one.
func (s *session) notify(msg string) {
	s.mu.Lock()
	isPTY, rec := s.pty != nil, s.rec
	s.mu.Unlock()
	text := msg + "\n"
	if isPTY {
		text = "\r\n" + msg + "\r\n"
		rec.output([]byte(text))
	}
	_, _ = s.ch.Stderr().Write([]byte(text))
}

// startRecording calls Config.Record, if set.
func (s *session) startRecording() error {
	record := s.c.srv.cfg.Record
	if record == nil {
		return nil
	}
	w, h, term := 80, 24, ""
	s.mu.Lock()
	if s.pty != nil {
		w, h, term = int(s.pty.Columns), int(s.pty.Rows), s.pty.Term
	}
	s.mu.Unlock()
	r, err := record(s.g.sess, w, h, term)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.rec = &recording{r: r, start: time.Now()}
	s.mu.Unlock()
	return nil
}

func (s *session) stopRecording() {
	s.mu.Lock()
	rec := s.rec
	s.mu.Unlock()
	if err := rec.close(); err != nil {
		s.log.Warn("closing the session recording failed", "err", err)
	}
}

// copyOut copies the program's output to the client, recording it.
func (s *session) copyOut(dst interface{ Write([]byte) (int, error) }, src interface{ Read([]byte) (int, error) }) {
	defer panics.Recover(s.log, "agent SSH session output", s.c.abort)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			s.c.touch()
			s.mu.Lock()
			rec := s.rec
			s.mu.Unlock()
			rec.output(buf[:n])
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// copyIn copies the client's input to the program.
func (s *session) copyIn(dst interface{ Write([]byte) (int, error) }, src interface{ Read([]byte) (int, error) }) {
	defer panics.Recover(s.log, "agent SSH session input", s.c.abort)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			s.c.touch()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// recording serialises calls to a Recorder; nil records nothing.
type recording struct {
	mu    sync.Mutex
	r     Recorder
	start time.Time
}

func (r *recording) output(p []byte) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.r.Output(time.Since(r.start), append([]byte(nil), p...))
}

func (r *recording) resize(w, h int) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.r.Resize(time.Since(r.start), w, h)
}

func (r *recording) close() error {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.r.Close()
}
