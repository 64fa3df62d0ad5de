package apiserver_test

import (
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/tunnelhq/tunnel/gateway/internal/apiserver"
	"github.com/tunnelhq/tunnel/gateway/internal/auth"
	"github.com/tunnelhq/tunnel/pkg/api"
)

// TestConsoleCookieIsNotAnonymous: a request carrying a console cookie
// that opens is not charged to its source's anonymous budget (a page and
// its API calls would soon spend it), while the same source without the
// cookie, or with an altered one, is still limited.
func TestConsoleCookieIsNotAnonymous(t *testing.T) {
	s := newServer(t, func(a *apiserver.Server, clock *fakeClock) {
		a.Limiter = auth.NewIPLimiter(rate.Every(time.Hour), 3, clock.Now)
	})
	s.addRole("admins", nil, true)
	secret := s.addUser("alice", "admins")
	cs := s.consoleLogin("alice", secret) // one anonymous request
	for i := range 10 {
		if r := s.consoleDo("GET", api.PathWhoami, cs.cookie, "", "", ""); r.status != 200 {
			t.Fatalf("whoami %d with a console cookie: %d %s; want 200 (not charged to the anonymous budget)", i, r.status, r.body)
		}
	}
	statuses := map[int]int{}
	for range 4 {
		statuses[s.consoleDo("GET", api.PathWhoami, "", "", "", "").status]++
	}
	statuses[s.consoleDo("GET", api.PathWhoami, cs.cookie+"x", "", "", "").status]++
	if statuses[429] < 3 {
		t.Fatalf("anonymous and altered-cookie calls after the budget of 3: statuses %v; want at least 3×429", statuses)
	}
}
