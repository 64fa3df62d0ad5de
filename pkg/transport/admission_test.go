package transport

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

func TestAdmissionCountsUntilAdmittedOrEnded(t *testing.T) {
	a := NewAdmission(4, 0)
	cc := a.ConnContext(nil)
	info := &quic.ClientInfo{RemoteAddr: &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1}}
	other := &quic.ClientInfo{RemoteAddr: &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 1}}
	ctx1, cancel1 := context.WithCancel(context.Background())
	c1, err := cc(ctx1, info)
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	c2, err := cc(ctx2, info)
	if err != nil {
		t.Fatal(err)
	}
	// One source takes at most half the room.
	if _, err := cc(context.Background(), info); !errors.Is(err, ErrBusy) {
		t.Fatalf("a third connection from one source with room for four: %v; want ErrBusy", err)
	}
	ctx3, cancel3 := context.WithCancel(context.Background())
	defer cancel3()
	if _, err := cc(ctx3, other); err != nil {
		t.Fatalf("another source: %v", err)
	}
	c4, err := cc(context.Background(), other)
	if err != nil {
		t.Fatalf("another source, second connection: %v", err)
	}
	if _, err := cc(context.Background(), &quic.ClientInfo{RemoteAddr: &net.UDPAddr{IP: net.IPv4(192, 0, 2, 3), Port: 1}}); !errors.Is(err, ErrBusy) {
		t.Fatalf("a fifth connection with room for four: %v; want ErrBusy", err)
	}
	Admitted(c4)
	Admitted(c2)
	Admitted(c2) // twice is harmless
	cancel3()
	waitUntil(t, func() bool { return a.InProgress() == 1 })
	cancel1() // the first ends without being admitted
	waitUntil(t, func() bool { return a.InProgress() == 0 })
	Admitted(c1)
	if a.InProgress() != 0 || a.Refused() != 2 {
		t.Fatalf("%d in progress, %d refused; want 0 and 2", a.InProgress(), a.Refused())
	}
	// With every slot free again, the first source gets its share back.
	if _, err := cc(context.Background(), info); err != nil {
		t.Fatalf("after the slots were freed: %v", err)
	}
	Admitted(context.Background()) // no admission: nothing happens
}

// A refusal of the next ConnContext (the per-source gate) frees the slot.
func TestAdmissionNextRefuses(t *testing.T) {
	a := NewAdmission(1, 0)
	refuse := errors.New("refused by the gate")
	cc := a.ConnContext(func(context.Context, *quic.ClientInfo) (context.Context, error) { return nil, refuse })
	for range 3 {
		if _, err := cc(context.Background(), &quic.ClientInfo{}); !errors.Is(err, refuse) {
			t.Fatalf("got %v; want the gate's refusal", err)
		}
	}
	if a.InProgress() != 0 || a.Refused() != 0 {
		t.Fatalf("%d in progress, %d refused as busy; want 0 and 0", a.InProgress(), a.Refused())
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The per-source share follows the gateway's per-source cap, up to the
// whole admission.
func TestAdmissionPerSourceShare(t *testing.T) {
	for _, tt := range []struct{ max, perSource, want int }{
		{8, 0, 4}, {8, 2, 2}, {8, 8, 8}, {8, 1_000_000, 8}, {1, 0, 1},
	} {
		a := NewAdmission(tt.max, tt.perSource)
		cc := a.ConnContext(nil)
		n := 0
		for range tt.max + 1 {
			if _, err := cc(context.Background(), &quic.ClientInfo{RemoteAddr: &net.UDPAddr{IP: net.IPv4(192, 0, 2, 9), Port: 1}}); err == nil {
				n++
			}
		}
		if n != tt.want {
			t.Errorf("max %d, per source %d: one source got %d; want %d", tt.max, tt.perSource, n, tt.want)
		}
	}
}
