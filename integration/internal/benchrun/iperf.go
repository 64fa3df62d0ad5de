package benchrun

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"time"
)

// iperfResult is one iperf3 client run.
type iperfResult struct {
	BitsPerSecond float64 // end.sum_received.bits_per_second
	Bytes         float64 // end.sum_received.bytes
}

// iperfJSON is the part of `iperf3 -J` output the harness reads.
type iperfJSON struct {
	End struct {
		SumReceived struct {
			Bytes         float64 `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// runIperf runs `iperf3 -c HOST -p PORT -P streams -J` on client plus either
// -t secs (duration) or -n bytes, retrying a few times while the server
// reports it is busy finishing the previous test.
func runIperf(ctx context.Context, client *host, bin, addr string, streams int, duration time.Duration, nbytes string) (iperfResult, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return iperfResult{}, err
	}
	args := []string{"-c", host, "-p", port, "-P", fmt.Sprint(streams), "-J", "--connect-timeout", "5000"}
	if nbytes != "" {
		args = append(args, "-n", nbytes)
	} else {
		args = append(args, "-t", fmt.Sprint(int(duration.Round(time.Second)/time.Second)))
	}
	var lastErr error
	for attempt := 0; attempt < 10; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return iperfResult{}, ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
		}
		cctx, cancel := context.WithTimeout(ctx, duration+60*time.Second)
		out, runErr := client.output(exec.CommandContext(cctx, bin, args...), false)
		cancel()
		var j iperfJSON
		jerr := json.Unmarshal(out, &j)
		switch {
		case jerr == nil && j.Error == "" && runErr == nil && j.End.SumReceived.Bytes > 0:
			return iperfResult{BitsPerSecond: j.End.SumReceived.BitsPerSecond, Bytes: j.End.SumReceived.Bytes}, nil
		case jerr == nil && j.Error != "":
			lastErr = fmt.Errorf("iperf3 %s: %s", strings.Join(args, " "), j.Error)
			if !strings.Contains(j.Error, "busy") && !strings.Contains(j.Error, "connect") {
				return iperfResult{}, lastErr
			}
		default:
			// The end of the output holds the summary that was missing.
			lastErr = fmt.Errorf("iperf3 %s: %v (json: %v) ...%q", strings.Join(args, " "), runErr, jerr, out[max(len(out)-1500, 0):])
		}
		if ctx.Err() != nil {
			return iperfResult{}, ctx.Err()
		}
	}
	return iperfResult{}, lastErr
}
