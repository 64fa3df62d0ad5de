package benchrun

import (
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
)

// tb adapts the harness to the testing.TB the shared test helpers (pgtest,
// sshdtest, testenv) take. Fatalf and Skipf panic with a tbAbort, which
// callTB turns back into an error; Cleanup functions go on the harness's
// cleanup stack and run when the harness exits.
//
// The embedded testing.TB is nil: it only satisfies the interface's private
// method. Any method not overridden here panics if a helper starts using it,
// which callTB reports as an error.
type tb struct {
	testing.TB
	name string
	log  io.Writer
	env  *env

	mu     sync.Mutex
	failed bool
}

// tbAbort is the panic value of Fatalf/Skipf/FailNow/SkipNow.
type tbAbort struct{ msg string }

func newTB(e *env, name string) *tb { return &tb{name: name, log: e.log, env: e} }

func (t *tb) Helper()      {}
func (t *tb) Name() string { return t.name }

// Log and Logf write to the harness's log as they are: the helpers prefix
// their messages with their own name.
func (t *tb) Log(args ...any) { fmt.Fprintln(t.log, args...) }
func (t *tb) Logf(format string, args ...any) {
	fmt.Fprintf(t.log, format+"\n", args...)
}

func (t *tb) Error(args ...any) { t.setFailed(); t.Log(args...) }
func (t *tb) Errorf(format string, args ...any) {
	t.setFailed()
	t.Logf(format, args...)
}

func (t *tb) Fatal(args ...any) { t.setFailed(); panic(tbAbort{fmt.Sprint(args...)}) }
func (t *tb) Fatalf(format string, args ...any) {
	t.setFailed()
	panic(tbAbort{fmt.Sprintf(format, args...)})
}
func (t *tb) FailNow() { t.setFailed(); panic(tbAbort{"FailNow"}) }
func (t *tb) Fail()    { t.setFailed() }

func (t *tb) Skip(args ...any) { panic(tbAbort{"skipped: " + fmt.Sprint(args...)}) }
func (t *tb) Skipf(format string, args ...any) {
	panic(tbAbort{"skipped: " + fmt.Sprintf(format, args...)})
}
func (t *tb) SkipNow()      { panic(tbAbort{"skipped"}) }
func (t *tb) Skipped() bool { return false }

func (t *tb) Failed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}

func (t *tb) setFailed() {
	t.mu.Lock()
	t.failed = true
	t.mu.Unlock()
}

func (t *tb) Cleanup(f func()) { t.env.addCleanup(t.name, f) }

func (t *tb) TempDir() string {
	d, err := os.MkdirTemp(t.env.tmp, "tb-")
	if err != nil {
		t.Fatalf("TempDir: %v", err)
	}
	return d
}

func (t *tb) Setenv(key, value string) {
	old, had := os.LookupEnv(key)
	_ = os.Setenv(key, value)
	t.Cleanup(func() {
		if had {
			_ = os.Setenv(key, old)
		} else {
			_ = os.Unsetenv(key)
		}
	})
}

// callTB runs f with a fresh tb named name and returns the Fatalf/Skipf
// message (or any other panic) as an error.
func callTB(e *env, name string, f func(t testing.TB)) (err error) {
	t := newTB(e, name)
	defer func() {
		if r := recover(); r != nil {
			if a, ok := r.(tbAbort); ok {
				err = fmt.Errorf("%s: %s", name, a.msg)
				return
			}
			err = fmt.Errorf("%s: panic: %v", name, r)
		}
	}()
	f(t)
	if t.Failed() {
		return fmt.Errorf("%s: failed (see log above)", name)
	}
	return nil
}
