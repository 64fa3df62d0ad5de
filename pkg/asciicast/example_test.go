package asciicast_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/tunnelhq/tunnel/pkg/asciicast"
)

func Example() {
	// Record.
	var rec bytes.Buffer
	w, err := asciicast.NewWriter(&rec, asciicast.Header{
		Width: 80, Height: 24, Env: map[string]string{"TERM": "xterm-256color"},
	})
	if err != nil {
		log.Fatal(err)
	}
	w.MaxBytes = 10 << 20
	// A write error sticks: the event methods and Close all return it.
	// Here the buffer cannot fail, so only Close is checked.
	w.Output(100*time.Millisecond, []byte("$ "))
	w.Input(time.Second, []byte("exit\r"))
	w.Output(1100*time.Millisecond, []byte("exit\r\n\xe2\x9c"))    // a split "✓"...
	w.Output(1200*time.Millisecond, []byte("\x93 logged out\r\n")) // ...completed
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}
	fmt.Print(rec.String())

	// Read back.
	r, err := asciicast.NewReader(bytes.NewReader(rec.Bytes()))
	if err != nil {
		log.Fatal(err)
	}
	for {
		e, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%v %s %q\n", e.Time, e.Type, e.Data)
	}
	// Output:
	// {"version":2,"width":80,"height":24,"env":{"TERM":"xterm-256color"}}
	// [0.100000, "o", "$ "]
	// [1.000000, "i", "exit\r"]
	// [1.100000, "o", "exit\r\n"]
	// [1.200000, "o", "✓ logged out\r\n"]
	// 100ms o "$ "
	// 1s i "exit\r"
	// 1.1s o "exit\r\n"
	// 1.2s o "✓ logged out\r\n"
}

func ExamplePlay() {
	rec := `{"version": 2, "width": 80, "height": 24}
[0.5, "o", "hello "]
[60.5, "o", "world\n"]
`
	// Replay at double speed, with idle gaps cut to 2 s. A nil sleep
	// would really wait; this one only prints.
	sleep := func(ctx context.Context, d time.Duration) error {
		fmt.Printf("[wait %v]\n", d)
		return ctx.Err()
	}
	if err := asciicast.Play(context.Background(), bytes.NewReader([]byte(rec)), os.Stdout, 2, 2*time.Second, sleep); err != nil {
		log.Fatal(err)
	}
	// Output:
	// [wait 250ms]
	// hello [wait 1s]
	// world
}
