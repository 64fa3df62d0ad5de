package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/tunnelhq/tunnel/pkg/wire"
)

// TestForwarderNoReplyIsAReset: a gateway that ends the stream (FIN)
// without any reply accepted nothing: the local client sees a reset, never
// a clean end it could take for a complete answer.
func TestForwarderNoReplyIsAReset(t *testing.T) {
	cc, sc := quicConns(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		st, err := sc.AcceptStream(ctx)
		if err != nil {
			return
		}
		if _, err := wire.ReadHeader(st); err != nil {
			return
		}
		st.Close()
		io.Copy(io.Discard, st)
	}()
	t.Cleanup(func() { cancel(); sc.CloseWithError(CodeShutdown, "over"); <-done })
	ft := startForwarder(t, &fakeOpener{conn: cc}, nil)
	c, err := net.DialTCP("tcp", nil, ft.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("stream ended before its reply: client read %q, %v; want ECONNRESET", got, err)
	}
}
