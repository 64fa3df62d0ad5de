package integration

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/tunnelhq/tunnel/agent"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/seal"
)

// TestTrustBundlePush: a CA rotation's new keys reach a connected agent
// over its live connection, without a renewal (certificates of a day): a
// few seconds after rotate start, old-1's sealed identity holds both keys
// of each kind, and its log says so. After activate, new-1 enrols with a
// certificate of the new X.509 CA while old-1 keeps its certificate of the
// old one, and direct streams between the two work both ways: old-1
// verifies new-1's certificate with the bundle it was sent (as a caller,
// and as a target, whose peer listener started before the push).
func TestTrustBundlePush(t *testing.T) {
	c := startCluster(t, "--login-burst", "1000", "--agent-ttl", "24h")
	admin := c.adminUser()
	admin.login()
	echo := serve(t, echoHandler)
	toNew := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	toOld := fmt.Sprintf("127.0.0.1:%d", freeLoopbackPort(t))
	admin.must("admin", "policy", "allow", "--from", "old-1", "--to", "new-1/echo")
	admin.must("admin", "policy", "allow", "--from", "new-1", "--to", "old-1/echo")

	old := c.startAgent("old-1", admin.token("old-1"),
		fmt.Sprintf("expose:\n  - {name: echo, address: %s}\nlisten:\n  - {name: to-new, address: %s, target: new-1/echo}\n", echo.addr(), toNew))
	admin.waitOnline("old-1", true, 20*time.Second)
	before := readAgentIdentity(t, old.dataDir)
	if n := len(pemCerts(t, before.CAPEM)); n != 1 || len(before.UserCAs) != 1 || len(before.HostCAs) != 1 {
		t.Fatalf("before the rotation old-1 trusts %d X.509 CAs, %d user CAs, %d host CAs; want one of each", n, len(before.UserCAs), len(before.HostCAs))
	}
	oldLeaf := pemCerts(t, before.CertPEM)[0]
	// late-1 is offline when the rotation starts: it gets the bundle when
	// it connects again (the gateway sends it to an agent that connects
	// while a rotation is under way), not at its next renewal.
	late := c.startAgent("late-1", admin.token("late-1"), "expose:\n  - {name: other, address: 127.0.0.1:9}\n")
	admin.waitOnline("late-1", true, 20*time.Second)
	late.stop()

	// start: the new keys reach old-1 over its connection.
	admin.must("admin", "ca", "rotate", "start")
	var st api.CARotationStatus
	if err := json.Unmarshal([]byte(admin.must("admin", "ca", "rotate", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	newKey := map[string]string{}
	for _, k := range st.Kinds {
		if k.New == nil {
			t.Fatalf("after start %s has no new key: %+v", k.Kind, k)
		}
		newKey[k.Kind] = k.New.Public
	}
	newCA := pemCerts(t, newKey["x509"])[0]
	var pushed *agent.Identity
	waitFor(t, 15*time.Second, "old-1's saved identity to hold the new CAs", func() bool {
		id := readAgentIdentity(t, old.dataDir)
		if len(pemCerts(t, id.CAPEM)) == 2 && hasKey(t, id.UserCAs, newKey["ssh-user"]) && hasKey(t, id.HostCAs, newKey["ssh-host"]) {
			pushed = id
			return true
		}
		return false
	})
	if !hasCert(pemCerts(t, pushed.CAPEM), newCA) || len(pushed.UserCAs) != 2 || len(pushed.HostCAs) != 2 {
		t.Fatalf("old-1 saved %d user CAs, %d host CAs and X.509 CAs without the new one; want both keys of each kind", len(pushed.UserCAs), len(pushed.HostCAs))
	}
	if pushed.CertPEM != before.CertPEM || pushed.Pin != before.Pin {
		t.Fatal("the trust bundle changed old-1's certificate or pin; it must change only what it trusts")
	}
	if !strings.Contains(old.log.String(), "trust bundle from the gateway saved") {
		t.Errorf("old-1 does not log the bundle it saved:\n%s", old.log.String())
	}
	if strings.Contains(old.log.String(), "certificate renewed") {
		t.Fatalf("old-1 renewed its certificate; the test needs the bundle to come without a renewal:\n%s", old.log.String())
	}

	late.start("")
	waitFor(t, 30*time.Second, "late-1, connected after the start, to hold the new CAs", func() bool {
		id := readAgentIdentity(t, late.dataDir)
		return len(pemCerts(t, id.CAPEM)) == 2 && hasKey(t, id.UserCAs, newKey["ssh-user"]) && hasKey(t, id.HostCAs, newKey["ssh-host"])
	})
	if strings.Contains(late.log.String(), "certificate renewed") {
		t.Fatalf("late-1 renewed its certificate; the test needs the bundle to come on connecting:\n%s", late.log.String())
	}
	// rotate status counts the agents that said they hold the bundle.
	waitFor(t, 30*time.Second, "rotate status to count both agents holding the new bundle", func() bool {
		var st api.CARotationStatus
		if err := json.Unmarshal([]byte(admin.must("admin", "ca", "rotate", "status", "--json")), &st); err != nil {
			t.Fatal(err)
		}
		return st.Agents != nil && st.Agents.Connected == 2 && st.Agents.Current == 2
	})
	if out := admin.must("admin", "ca", "rotate", "status"); !strings.Contains(out, "agents: 2 of 2 connected to this gateway hold its current trust bundle") {
		t.Errorf("rotate status does not say how many agents hold the bundle:\n%s", out)
	}

	// activate: new-1's certificate is signed by the new CA; old-1's is
	// still the old CA's.
	admin.must("admin", "ca", "rotate", "activate", "--force")
	newAgent := c.startAgent("new-1", admin.token("new-1"),
		fmt.Sprintf("expose:\n  - {name: echo, address: %s}\nlisten:\n  - {name: to-old, address: %s, target: old-1/echo}\n", echo.addr(), toOld))
	admin.waitOnline("new-1", true, 20*time.Second)
	newLeaf := pemCerts(t, readAgentIdentity(t, newAgent.dataDir).CertPEM)[0]
	if newLeaf.CheckSignatureFrom(newCA) != nil {
		t.Fatal("new-1's certificate is not signed by the new X.509 CA")
	}
	if oldLeaf.CheckSignatureFrom(newCA) == nil || readAgentIdentity(t, old.dataDir).CertPEM != before.CertPEM {
		t.Fatal("old-1's certificate changed; the test needs it from the old CA")
	}

	// Direct streams both ways between the two CAs' agents.
	for _, d := range []struct {
		from     *agentProc
		listener string
		addr     string
		to       *agentProc
	}{{old, "to-new", toNew, newAgent}, {newAgent, "to-old", toOld, old}} {
		waitFor(t, 60*time.Second, d.from.name+" to open a direct stream to "+d.to.name, func() bool {
			cc, err := net.DialTimeout("tcp", d.addr, 2*time.Second)
			if err != nil {
				return false
			}
			defer cc.Close()
			if echoOnce(cc) != nil {
				return false
			}
			l := d.from.log.String()
			return strings.Contains(l, `"direct stream","listener":"`+d.listener+`"`) ||
				strings.Contains(l, `msg="direct stream" listener=`+d.listener)
		})
	}
	// Over TCP both ways: each side's TCP listener checks the caller
	// against the CAs it trusts now (the pushed bundle), not those it
	// started with (then new-1's stream to old-1 fell back to QUIC).
	for _, d := range []struct {
		from     *agentProc
		listener string
	}{{old, "to-new"}, {newAgent, "to-old"}} {
		tcp := false
		for _, line := range strings.Split(d.from.log.String(), "\n") {
			if strings.Contains(line, `msg="direct stream" listener=`+d.listener) && strings.Contains(line, "transport=tcp") {
				tcp = true
			}
		}
		if !tcp {
			t.Errorf("%s's direct stream (%s) did not go over TCP:\n%s", d.from.name, d.listener, d.from.log.String())
		}
	}
	if l := old.log.String(); !strings.Contains(l, "direct=true") && !strings.Contains(l, `"direct":true`) {
		t.Errorf("old-1 delivered no direct stream:\n%s", l)
	}
	if strings.Contains(old.log.String(), "refused the trust bundle") {
		t.Errorf("old-1 refused a trust bundle:\n%s", old.log.String())
	}
}

// readAgentIdentity opens an agent's sealed identity with its KEK, as the
// agent does.
func readAgentIdentity(t *testing.T, dataDir string) *agent.Identity {
	t.Helper()
	s, err := seal.NewKeyFileSealer(filepath.Join(dataDir, agent.KEKFile))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dataDir, agent.IdentityFile))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := s.Open(b, "agent/identity")
	if err != nil {
		t.Fatalf("open the agent's identity: %v", err)
	}
	var id agent.Identity
	if err := json.Unmarshal(pt, &id); err != nil {
		t.Fatal(err)
	}
	return &id
}

// pemCerts parses PEM certificates.
func pemCerts(t *testing.T, text string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := []byte(text)
	for {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			return out
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

func hasCert(cs []*x509.Certificate, want *x509.Certificate) bool {
	for _, c := range cs {
		if c.Equal(want) {
			return true
		}
	}
	return false
}

// hasKey reports whether lines (authorized_keys) hold the key of line.
func hasKey(t *testing.T, lines []string, line string) bool {
	t.Helper()
	want, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}
	for _, l := range lines {
		if k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(l)); err == nil && string(k.Marshal()) == string(want.Marshal()) {
			return true
		}
	}
	return false
}
