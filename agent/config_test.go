package agent

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseConfig(t *testing.T) {
	good := `
expose:
  - name: postgres
    address: 127.0.0.1:5432
    protocol: postgres
  - name: cache
    address: cache.internal:6379
  - name: orders
    address: 127.0.0.1:5433
    protocol: postgres
    credentials: {vault: database/creds/orders-app}
listen:
  - name: orders-db
    address: 127.0.0.1:5432
    target: db-1/postgres
  - name: users-db
    address: 127.0.0.2:5432
    target: db-2/postgres
  - name: v6
    address: "[::1]:5432"
    target: db-3/postgres
  - name: local
    address: localhost:6000
    target: db-3/cache
`
	cfg, err := ParseConfig([]byte(good))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	if len(cfg.Expose) != 3 || len(cfg.Listen) != 4 || cfg.Listen[1].Target != "db-2/postgres" || cfg.Expose[0].Protocol != "postgres" ||
		cfg.Expose[0].Credentials != nil || cfg.Expose[2].Credentials == nil || cfg.Expose[2].Credentials.Vault != "database/creds/orders-app" {
		t.Errorf("got %+v", cfg)
	}
	for _, empty := range []string{"", "# nothing yet\n", "~\n", "listen:\nexpose: []\n"} {
		if cfg, err := ParseConfig([]byte(empty)); err != nil || len(cfg.Expose)+len(cfg.Listen) != 0 {
			t.Errorf("ParseConfig(%q) = %+v, %v; want an empty config", empty, cfg, err)
		}
	}
}

// Every mistake is named by its key path and line, in words, never with
// Go type names.
func TestParseConfigErrors(t *testing.T) {
	for _, tt := range []struct{ name, yaml, want string }{
		{"unknown key", "listen:\n  - name: orders-db\n    adress: 127.0.0.1:5432\n    target: db-1/postgres\n",
			"unknown key adress in listen[0] (line 3): did you mean address? valid keys: name, address, target"},
		{"transposed key", "listen:\n  - name: a\n    tagret: db-1/pg\n",
			"unknown key tagret in listen[0] (line 3): did you mean target? valid keys: name, address, target"},
		{"unknown key far from any", "expose:\n  - name: pg\n    port: 5432\n",
			"unknown key port in expose[0] (line 3): valid keys: name, address, protocol, credentials"},
		{"credentials unknown key", "expose:\n  - name: pg\n    address: 127.0.0.1:5432\n    protocol: postgres\n    credentials: {vualt: database/creds/app}\n",
			"unknown key vualt in expose[0].credentials (line 5): did you mean vault? valid keys: vault"},
		{"credentials not a mapping", "expose:\n  - name: pg\n    address: 127.0.0.1:5432\n    credentials: database/creds/app\n",
			"expose[0].credentials (line 4): must be a mapping with the keys vault"},
		{"credentials vault missing", "expose:\n  - name: pg\n    address: 127.0.0.1:5432\n    protocol: postgres\n    credentials: {}\n",
			"expose[0].credentials (line 5): missing key vault; give the Vault path of the database role, for example database/creds/orders-app"},
		{"credentials bad path", "expose:\n  - name: pg\n    address: 127.0.0.1:5432\n    protocol: postgres\n    credentials:\n      vault: secret/data/app\n",
			`expose[0].credentials.vault (line 6): "secret/data/app" is not a Vault database credential path: use MOUNT/creds/ROLE, for example database/creds/orders-app`},
		{"credentials without protocol", "expose:\n  - name: pg\n    address: 127.0.0.1:5432\n    credentials: {vault: database/creds/app}\n",
			"expose[0] (line 2): missing key protocol; a service with credentials needs protocol: postgres or mysql (the agent logs in to the database for the caller)"},
		{"credentials with tcp", "expose:\n  - name: pg\n    address: 127.0.0.1:5432\n    protocol: tcp\n    credentials: {vault: database/creds/app}\n",
			`expose[0].protocol (line 4): "tcp": with credentials, use postgres or mysql (the protocol the agent logs in to the database with; mysql also serves MariaDB)`},
		{"unknown top key", "exposes: []\n",
			"unknown key exposes at the top level (line 1): did you mean expose? valid keys: expose, listen, direct, dns, sudoers_dir"},
		{"dns not on loopback", "dns:\n  listen: 0.0.0.0:53\n",
			"dns.listen (line 2): 0.0.0.0:53: the agent's DNS answers on a loopback address only: use 127.0.0.153:53"},
		{"dns unknown key", "dns:\n  listn: 127.0.0.153:53\n",
			"unknown key listn in dns (line 2): did you mean listen? valid keys: listen, upstream"},
		{"direct not on or off", "direct: yes\n",
			`direct (line 1): "yes": use on (streams between agents go directly when the agents can reach each other), off (always through the gateway) or {tcp: off} (directly, over QUIC only)`},
		{"direct tcp not on or off", "expose: []\ndirect:\n  tcp: no\n",
			`direct.tcp (line 3): "no": use on (direct streams may also go over TCP, on the port number of the agent's UDP socket) or off (over QUIC only)`},
		{"direct unknown key", "direct: {tpc: off}\n",
			"unknown key tpc in direct (line 1): did you mean tcp? valid keys: tcp"},
		{"sudoers_dir relative", "sudoers_dir: sudoers.d\n",
			`sudoers_dir (line 1): "sudoers.d": use an absolute directory that sudo reads (its #includedir, usually /etc/sudoers.d)`},
		{"direct a list", "direct: [tcp]\n",
			"direct (line 1): must be on, off or a mapping with the key tcp, not a list"},
		{"direct tcp twice", "direct:\n  tcp: off\n  tcp: on\n",
			"direct.tcp (line 3): the key tcp is given twice (first at line 2)"},
		{"no port", "expose:\n  - name: pg\n    address: 5432\n",
			`expose[0].address (line 3): "5432" must be HOST:PORT, for example 127.0.0.1:5432`},
		{"no host", "expose:\n  - name: pg\n    address: :5432\n",
			`expose[0].address (line 3): ":5432" needs a host (127.0.0.1 keeps it local)`},
		{"port too large", "expose:\n  - name: pg\n    address: 127.0.0.1:70000\n",
			`expose[0].address (line 3): port 70000 of "127.0.0.1:70000" is out of range: use 1 to 65535`},
		{"port zero", "listen:\n  - name: a\n    address: 127.0.0.1:0\n    target: db-1/pg\n",
			`listen[0].address (line 3): port 0 of "127.0.0.1:0" is out of range: use 1 to 65535`},
		{"port not a number", "expose:\n  - name: pg\n    address: 127.0.0.1:pg\n",
			`expose[0].address (line 3): the port of "127.0.0.1:pg" must be a number from 1 to 65535`},
		{"bad service host", "expose:\n  - name: pg\n    address: 'bad host!:5432'\n",
			`expose[0].address (line 3): the host of "bad host!:5432" is neither an IP address nor a host name`},
		{"listener host name", "listen:\n  - {name: a, address: 'db.internal:5432', target: db-1/pg}\n",
			`listen[0].address (line 2): the host of "db.internal:5432" must be an IP address of this machine, such as 127.0.0.1 (a loopback address keeps the listener local)`},
		{"reserved service name", "expose:\n  - {name: ssh, address: 127.0.0.1:22}\n",
			`expose[0].name (line 2): the service name "ssh" is reserved for this node's SSH endpoint (tunnel ssh reaches it): choose another name`},
		{"duplicate service", "expose:\n  - {name: pg, address: 127.0.0.1:1}\n  - {name: pg, address: 127.0.0.1:2}\n",
			`expose[1].name (line 3): service "pg" is exposed twice (first at line 2)`},
		{"duplicate listener", "listen:\n  - {name: a, address: 127.0.0.1:1, target: db-1/pg}\n  - {name: a, address: 127.0.0.1:2, target: db-1/pg}\n",
			`listen[1].name (line 3): listener "a" is defined twice (first at line 2)`},
		{"same listen address", "listen:\n  - {name: a, address: 127.0.0.1:5432, target: db-1/pg}\n  - {name: b, address: 127.0.0.1:5432, target: db-2/pg}\n",
			`listen[1].address (line 3): 127.0.0.1:5432 is already used by listener "a" (line 2); give each listener its own loopback address (127.0.0.2:PORT, 127.0.0.3:PORT, ...)`},
		{"same address spelled differently", "listen:\n  - {name: a, address: 'localhost:5432', target: db-1/pg}\n  - {name: b, address: 127.0.0.1:5432, target: db-2/pg}\n",
			`listen[1].address (line 3): 127.0.0.1:5432 is already used by listener "a" (line 2); give each listener its own loopback address (127.0.0.2:PORT, 127.0.0.3:PORT, ...)`},
		{"wildcard takes the port", "listen:\n  - {name: a, address: 0.0.0.0:5432, target: db-1/pg}\n  - {name: b, address: 127.0.0.2:5432, target: db-2/pg}\n",
			`listen[1].address (line 3): 127.0.0.2:5432 conflicts with listener "a" on 0.0.0.0:5432 (line 2): 0.0.0.0 and :: take the port on every address of this machine; give each listener its own loopback address instead`},
		{"target without service", "listen:\n  - {name: a, address: 127.0.0.1:1, target: db-1}\n",
			`listen[0].target (line 2): target "db-1" must be NODE/SERVICE, for example db-1/postgres`},
		{"target bad node", "listen:\n  - {name: a, address: 127.0.0.1:1, target: Db-1/pg}\n",
			`listen[0].target (line 2): target "Db-1/pg" must be NODE/SERVICE: node name "Db-1" may hold only a-z, 0-9, '.', '_' and '-', and must start with a letter or digit`},
		{"target missing", "listen:\n  - {name: a, address: 127.0.0.1:1}\n",
			"listen[0] (line 2): missing key target; give the service to reach as NODE/SERVICE, for example db-1/postgres"},
		{"target empty", "listen:\n  - {name: a, address: 127.0.0.1:1, target: }\n",
			"listen[0].target (line 2): is empty; give the service to reach as NODE/SERVICE, for example db-1/postgres"},
		{"name missing", "expose:\n  - address: 127.0.0.1:1\n",
			"expose[0] (line 2): missing key name; name the service, for example postgres"},
		{"bad name", "expose:\n  - {name: 'Bad Name', address: 127.0.0.1:1}\n",
			`expose[0].name (line 2): service name "Bad Name" may hold only a-z, 0-9, '.', '_' and '-', and must start with a letter or digit`},
		{"two documents", "expose: []\n---\nlisten: []\n",
			"more than one YAML document (line 2 starts another after ---): keep the whole configuration in one"},
		{"not a list", "listen: foo\n",
			`listen (line 1): must be a list of listeners, each item starting with "- "`},
		{"item not a mapping", "listen:\n  - foo\n",
			"listen[0] (line 2): must be a mapping with the keys name, address, target"},
		{"value not a scalar", "listen:\n  - name: [a]\n",
			"listen[0].name (line 2): must be a single value, not a list or a mapping"},
		{"key twice", "listen:\n  - name: a\n    name: b\n",
			"listen[0].name (line 3): the key name is given twice (first at line 2)"},
		{"top level a list", "- a\n",
			"line 1: the configuration must be a mapping with the keys expose, listen, direct, dns, sudoers_dir"},
		{"alias", "expose: &x []\nlisten: *x\n",
			"listen (line 2): YAML aliases (*name) are not supported here: write the value out"},
		{"bad indentation", "listen:\n  - name: a\n   address: x\n",
			"not valid YAML: line 1: did not find expected '-' indicator"},
		{"tab", "listen:\n\t- name: a\n",
			"not valid YAML: line 2 indents with a tab, and YAML indents with spaces only (line 2: found character that cannot start any token)"},
	} {
		_, err := ParseConfig([]byte(tt.yaml))
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s:\n got: %v\nwant: %s", tt.name, err, tt.want)
		}
	}
}

// LoadConfig names the file.
func TestLoadConfigNamesTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, []byte("listen:\n  - name: orders-db\n    adress: 127.0.0.1:5432\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(p)
	want := "config " + p + ": unknown key adress in listen[0] (line 3): did you mean address? valid keys: name, address, target"
	if err == nil || err.Error() != want {
		t.Errorf("LoadConfig: %v; want %s", err, want)
	}
}

// Validate, for a configuration built in code, says the same without
// lines.
func TestValidateWithoutLines(t *testing.T) {
	c := &FileConfig{Listen: []Listen{{Name: "a", Address: "127.0.0.1:99999", Target: "db-1/pg"}}}
	want := `listen[0].address: port 99999 of "127.0.0.1:99999" is out of range: use 1 to 65535`
	if err := c.Validate(); err == nil || err.Error() != want {
		t.Errorf("Validate: %v; want %s", err, want)
	}
	c = &FileConfig{Listen: []Listen{{Name: "a", Address: "127.0.0.1:1"}}}
	want = "listen[0].target: is empty; give the service to reach as NODE/SERVICE, for example db-1/postgres"
	if err := c.Validate(); err == nil || err.Error() != want {
		t.Errorf("Validate: %v; want %s", err, want)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("expose:\n  - name: pg\n    address: 127.0.0.1:5432\n"))
	f.Add([]byte("listen:\n  - {name: a, address: 127.0.0.1:1, target: db-1/pg}\n"))
	f.Add([]byte("listen:\n  - name: a\n    adress: 127.0.0.1:1\n"))
	f.Add([]byte("expose: &x []\nlisten: *x\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := ParseConfig(b)
		if err == nil && cfg.Validate() != nil {
			t.Fatal("ParseConfig accepted a config that does not validate")
		}
	})
}

// direct: takes on, off, or the mapping {tcp: on|off} (the direct path
// on, with or without its TCP transport).
func TestParseConfigDirect(t *testing.T) {
	for _, tt := range []struct {
		yaml          string
		direct, onTCP bool
	}{
		{"", true, true},
		{"direct: on\n", true, true},
		{"direct: off\n", false, false},
		{"direct: {tcp: off}\n", true, false},
		{"direct:\n  tcp: on\n", true, true},
		{"direct: {}\n", true, true},
	} {
		cfg, err := ParseConfig([]byte(tt.yaml))
		if err != nil {
			t.Errorf("ParseConfig(%q): %v", tt.yaml, err)
			continue
		}
		if cfg.DirectOn() != tt.direct || cfg.DirectTCPOn() != tt.onTCP {
			t.Errorf("ParseConfig(%q): DirectOn %v, DirectTCPOn %v; want %v, %v", tt.yaml, cfg.DirectOn(), cfg.DirectTCPOn(), tt.direct, tt.onTCP)
		}
	}
	if !(*FileConfig)(nil).DirectTCPOn() {
		t.Errorf("no file: DirectTCPOn false; want true")
	}
}

// The agent's TCP transport follows the file, and TUNNEL_DIRECT_TCP=off
// overrides it.
func TestPeerTCPOnConfig(t *testing.T) {
	for _, tt := range []struct {
		yaml, env string
		want      bool
	}{
		{"", "", true},
		{"direct: {tcp: off}\n", "", false},
		{"direct: off\n", "", false},
		{"", "off", false},
		{"direct: {tcp: on}\n", "off", false},
		{"direct: {tcp: off}\n", "on", false},
	} {
		cfg, err := ParseConfig([]byte(tt.yaml))
		if err != nil {
			t.Fatal(err)
		}
		t.Setenv(peerTCPEnv, tt.env)
		a := &Agent{cfg: Config{File: cfg}}
		if got := a.peerTCPOn(); got != tt.want {
			t.Errorf("file %q, %s=%q: peerTCPOn %v; want %v", tt.yaml, peerTCPEnv, tt.env, got, tt.want)
		}
	}
}
