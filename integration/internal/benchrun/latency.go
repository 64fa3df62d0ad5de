package benchrun

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"time"
)

// rtt64 measures n round trips of 64 bytes on one connection from client to
// the echo server at addr (write 64 bytes, read 64 back) and returns each
// duration.
func rtt64(ctx context.Context, client *host, addr string, n int) ([]time.Duration, error) {
	c, err := client.dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	msg := make([]byte, 64)
	for i := range msg {
		msg[i] = byte('a' + i%26)
	}
	buf := make([]byte, 64)
	// A few round trips first, so the connection is set up end to end.
	for i := 0; i < 10; i++ {
		if err := echoOnce(c, msg, buf); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		if i%100 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		start := time.Now()
		if err := echoOnce(c, msg, buf); err != nil {
			return nil, fmt.Errorf("round trip %d: %w", i, err)
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

func echoOnce(c net.Conn, msg, buf []byte) error {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(msg); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, buf[:len(msg)]); err != nil {
		return err
	}
	if string(buf[:len(msg)]) != string(msg) {
		return fmt.Errorf("echo returned %q, want %q", buf[:len(msg)], msg)
	}
	return nil
}

// connectFirstByte measures n times, from client: dial addr, write one
// byte, read it back, close. Each duration runs from the start of the dial
// to the byte.
func connectFirstByte(ctx context.Context, client *host, addr string, n int) ([]time.Duration, error) {
	out := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		d, err := firstByte(ctx, client, addr)
		if err != nil {
			return nil, fmt.Errorf("connection %d: %w", i, err)
		}
		out = append(out, d)
	}
	return out, nil
}

func firstByte(ctx context.Context, client *host, addr string) (time.Duration, error) {
	start := time.Now()
	c, err := client.dial(ctx, addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	buf := make([]byte, 1)
	if err := echoOnce(c, []byte{'x'}, buf); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// percentile returns the p-th percentile (0..100, nearest rank) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p/100*float64(len(s))+0.5) - 1
	i = max(0, min(i, len(s)-1))
	return s[i]
}
