package agent

import (
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	good := `
expose:
  - name: postgres
    address: 127.0.0.1:5432
    protocol: postgres
listen:
  - name: orders-db
    address: 127.0.0.1:5432
    target: db-1/postgres
  - name: users-db
    address: 127.0.0.2:5432
    target: db-2/postgres
`
	cfg, err := ParseConfig([]byte(good))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	if len(cfg.Expose) != 1 || len(cfg.Listen) != 2 || cfg.Listen[1].Target != "db-2/postgres" {
		t.Errorf("got %+v", cfg)
	}
	if _, err := ParseConfig(nil); err != nil {
		t.Errorf("empty config: %v; want none", err)
	}

	bad := []struct{ name, yaml, want string }{
		{"unknown key", "expose:\n  - name: pg\n    adress: 127.0.0.1:1\n", "adress"},
		{"unknown top key", "exposes: []\n", "exposes"},
		{"bad address", "expose:\n  - name: pg\n    address: 5432\n", "HOST:PORT"},
		{"no host", "expose:\n  - name: pg\n    address: :5432\n", "needs a host"},
		{"duplicate service", "expose:\n  - {name: pg, address: 127.0.0.1:1}\n  - {name: pg, address: 127.0.0.1:2}\n", "exposed twice"},
		{"same listen address", "listen:\n  - {name: a, address: 127.0.0.1:5432, target: db-1/pg}\n  - {name: b, address: 127.0.0.1:5432, target: db-2/pg}\n", "127.0.0.2"},
		{"bad target", "listen:\n  - {name: a, address: 127.0.0.1:1, target: db-1}\n", "NODE/SERVICE"},
		{"bad name", "expose:\n  - {name: 'Bad Name', address: 127.0.0.1:1}\n", "name"},
		{"two documents", "expose: []\n---\nlisten: []\n", "more than one"},
	}
	for _, tt := range bad {
		_, err := ParseConfig([]byte(tt.yaml))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v; want an error mentioning %q", tt.name, err, tt.want)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte("expose:\n  - name: pg\n    address: 127.0.0.1:5432\n"))
	f.Add([]byte("listen:\n  - {name: a, address: 127.0.0.1:1, target: db-1/pg}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := ParseConfig(b)
		if err == nil && cfg.Validate() != nil {
			t.Fatal("ParseConfig accepted a config that does not validate")
		}
	})
}
