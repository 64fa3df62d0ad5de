package transport

import (
	"io"
	"testing"
	"time"
)

// Hearing: quiet only once nothing was heard for Silence(beat) since the
// last look that saw a packet; a look that sees one starts over; a
// connection that ended is never quiet, nor is a nil Hearing.
func TestHearing(t *testing.T) {
	cc, sc := quicConns(t)
	beat := 100 * time.Millisecond
	t0 := time.Date(2026, 12, 3, 14, 0, 0, 0, time.UTC)
	h := NewHearing(cc, beat, t0)
	silence := Silence(beat)
	if silence != KeepAlive+2*beat {
		t.Fatalf("Silence(%s) = %s; want a keepalive and two looks", beat, silence)
	}
	if h.Quiet(t0.Add(silence - time.Millisecond)) {
		t.Errorf("quiet before Silence")
	}
	if !h.Quiet(t0.Add(silence)) {
		t.Errorf("not quiet after Silence with nothing heard")
	}

	// Traffic: the peer answers, so a later look hears it.
	before := cc.ConnectionStats().PacketsReceived
	st, err := cc.OpenStreamSync(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	acc, err := sc.AcceptStream(testContext(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(acc, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if _, err := acc.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(st, make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if cc.ConnectionStats().PacketsReceived == before {
		t.Fatal("no packet counted after an answer")
	}
	t1 := t0.Add(time.Minute)
	if d := h.Look(t1); d != 0 {
		t.Errorf("a look after an answer says %s of silence; want 0", d)
	}
	if h.Quiet(t1.Add(silence / 2)) {
		t.Errorf("quiet soon after a packet was heard")
	}
	if d := h.Look(t1.Add(3 * time.Second)); d != 3*time.Second {
		t.Errorf("a look with nothing new says %s of silence; want 3s", d)
	}
	if !h.Quiet(t1.Add(silence)) {
		t.Errorf("not quiet after Silence since the last packet")
	}

	cc.CloseWithError(CodeShutdown, "test over")
	if h.Quiet(t1.Add(time.Hour)) {
		t.Errorf("a connection that ended is quiet")
	}
	var none *Hearing
	if none.Quiet(t1) {
		t.Errorf("a nil Hearing is quiet")
	}
}
