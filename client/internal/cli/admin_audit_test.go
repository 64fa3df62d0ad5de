package cli

import (
	"encoding/json"
	"net/url"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/audit"
)

// TestAuditLsPages: the gateway answers at most api.AuditPage events at a
// time; audit ls pages through the whole log (or up to --limit), so a long
// log never makes one answer too large to read.
func TestAuditLsPages(t *testing.T) {
	const total = 2*api.AuditPage + 345
	g := newAdminTestGateway(t, func(r adminRequest) (int, any) {
		q, _ := url.ParseQuery(r.Query)
		after, _ := strconv.ParseInt(q.Get("after"), 10, 64)
		limit, _ := strconv.Atoi(q.Get("limit"))
		if limit == 0 || limit > api.AuditPage {
			limit = api.AuditPage
		}
		evs := []audit.Event{}
		for seq := after + 1; seq <= total && len(evs) < limit; seq++ {
			evs = append(evs, audit.Event{Seq: seq, Type: audit.LoginSuccess})
		}
		return 200, evs
	})
	for _, tc := range []struct {
		args    []string
		want    int
		queries []string
	}{
		{[]string{"--json"}, total, []string{"after=0&limit=5000", "after=5000&limit=5000", "after=10000&limit=5000"}},
		{[]string{"--json", "--limit", "7000"}, 7000, []string{"after=0&limit=5000", "after=5000&limit=2000"}},
		{[]string{"--json", "--after", "10300"}, total - 10300, []string{"after=10300&limit=5000"}},
	} {
		before := len(g.requests())
		out, err := g.run(append([]string{"admin", "audit", "ls"}, tc.args...)...)
		if err != nil {
			t.Fatalf("audit ls %v: %v\n%s", tc.args, err, out)
		}
		var evs []audit.Event
		if err := json.Unmarshal([]byte(out), &evs); err != nil {
			t.Fatalf("audit ls %v printed no JSON list: %v", tc.args, err)
		}
		if len(evs) != tc.want || evs[len(evs)-1].Seq != evs[0].Seq+int64(tc.want)-1 {
			t.Errorf("audit ls %v: %d events; want %d in order", tc.args, len(evs), tc.want)
		}
		var queries []string
		for _, r := range g.requests()[before:] {
			queries = append(queries, r.Query)
		}
		if diff := cmp.Diff(tc.queries, queries); diff != "" {
			t.Errorf("audit ls %v requests (-want +got):\n%s", tc.args, diff)
		}
	}
}
