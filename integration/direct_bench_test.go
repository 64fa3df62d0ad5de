package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tunnelhq/tunnel/pkg/api"
)

// BenchmarkRevokeDirectStream: the direct path's cut. app-1 reads zeros
// from web-1's "source" over a direct stream (agent to agent, off the
// gateway) as fast as it can; an admin removes the policy rule that allows
// it (DELETE /v1/admin/policy/ID), so the gateway re-evaluates its live
// streams and cuts this one on both agents (the caller's lease reset, the
// target told over its control stream). Measured from just before the
// request (t0): the arrival of the last byte at the TCP client
// (p50/p99-ms), when its read ended (end-), and the request's own round
// trip (api-). The rule is added again (untimed) before the next trial.
//
//	CI=1 go test -run '^$' -bench BenchmarkRevokeDirectStream -benchtime 100x ./integration/
func BenchmarkRevokeDirectStream(b *testing.B) {
	src := serve(b, zeroHandler)
	c := startCluster(b, "--login-burst", "1000")
	admin := c.adminUser()
	admin.login()
	cl := adminClient(b, c)
	defer cl.Close()
	c.startAgent("web-1", admin.token("web-1"), "expose:\n  - {name: source, address: "+src.addr()+"}\n")
	addr := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(b))
	app := c.startAgent("app-1", admin.token("app-1"), "listen:\n  - {name: source, address: "+addr+", target: web-1/source}\n")
	allow := func() int64 {
		var r api.PolicyRule
		if err := cl.Do(context.Background(), http.MethodPost, api.PathPolicy, nil,
			api.PolicyRule{Effect: "allow", From: "app-1", To: "web-1/source"}, &r); err != nil {
			b.Fatalf("allow: %v", err)
		}
		return r.ID
	}
	id := allow()
	admin.waitOnline("web-1", true, 30*time.Second)
	admin.waitOnline("app-1", true, 30*time.Second)

	st := bbStats{}
	var zero int64
	b.ResetTimer()
	for i := range b.N {
		var conn net.Conn
		var rd *bbReader
		deadline := time.Now().Add(30 * time.Second)
		for rd == nil {
			if time.Now().After(deadline) {
				b.Fatalf("trial %d: no byte through %s within 30s\n%s", i, addr, app.log.String())
			}
			cc, err := net.DialTimeout("tcp", addr, 2*time.Second)
			if err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			r := bbRead(cc)
			select {
			case <-r.first:
				conn, rd = cc, r
			case <-r.done:
				cc.Close()
				time.Sleep(50 * time.Millisecond)
			case <-time.After(5 * time.Second):
				cc.Close()
				<-r.done
			}
		}
		time.Sleep(bbWarmup)
		t0 := time.Now()
		if err := cl.Do(context.Background(), http.MethodDelete, fmt.Sprintf("%s/%d", api.PathPolicy, id), nil, nil, nil); err != nil {
			b.Fatalf("trial %d: remove the rule: %v", i, err)
		}
		apiDone := time.Now()
		select {
		case <-rd.done:
		case <-time.After(15 * time.Second):
			b.Fatalf("trial %d: the direct stream still flows 15s after its rule was removed", i)
		}
		conn.Close()
		last := sinceOrZero(rd.lastAt(), t0)
		if last == 0 {
			zero++
		}
		st.add("last-byte", last)
		st.add("end", rd.endedAt.Sub(t0))
		st.add("api", apiDone.Sub(t0))
		id = allow()
	}
	b.StopTimer()
	if !strings.Contains(app.log.String(), "direct stream cut by the gateway") {
		b.Errorf("app-1 never logged a direct stream cut: the streams were not direct?\n%s", app.log.String())
	}
	st.report(b, "last-byte", "")
	st.report(b, "end", "end-")
	st.report(b, "api", "api-")
	b.ReportMetric(float64(zero), "zero-trials")
	st.log(b, "last-byte", "end", "api")
}
