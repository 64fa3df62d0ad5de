package panics

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

func TestRecoverContainsPanicAndCleansUp(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	before := Count()
	closed := false
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer Recover(log, "test connection", func() error { closed = true; return errors.New("ignored") })
		var m map[string]int
		m["boom"] = 1 // nil map write panics
	}()
	wg.Wait()
	if !closed {
		t.Error("cleanup not called after a panic")
	}
	if got := Count() - before; got != 1 {
		t.Errorf("Count moved by %d; want 1", got)
	}
	out := buf.String()
	for _, want := range []string{"test connection", "assignment to entry in nil map", "panics_test.go"} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q lacks %q", out, want)
		}
	}
}

func TestRecoverWithoutPanicDoesNothing(t *testing.T) {
	before := Count()
	called := false
	func() {
		defer Recover(nil, "quiet", func() error { called = true; return nil })
	}()
	if called || Count() != before {
		t.Errorf("cleanup called=%v, count moved by %d; want neither", called, Count()-before)
	}
}
