package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/tunnelhq/tunnel/pkg/identity"
)

// FileConfig is the agent's YAML configuration file. Unknown keys are
// errors, so a typo never silently disables a listener.
//
//	expose:                      # services on this VM that others may reach
//	  - name: postgres
//	    address: 127.0.0.1:5432
//	listen:                      # local listeners that reach services elsewhere
//	  - name: orders-db
//	    address: 127.0.0.1:5432
//	    target: db-1/postgres
type FileConfig struct {
	Expose []Expose `yaml:"expose"`
	Listen []Listen `yaml:"listen"`
}

// Expose is a local service other nodes may reach (policy permitting).
type Expose struct {
	Name string `yaml:"name"`
	// Address is where the service listens on this VM, host:port.
	Address string `yaml:"address"`
	// Protocol is a hint shown by tunnel ls (postgres, mysql, tcp).
	Protocol string `yaml:"protocol"`
}

// Listen is a local listener whose connections go to Target.
type Listen struct {
	Name string `yaml:"name"`
	// Address is the local host:port to listen on. Several listeners on
	// one port use different loopback addresses (127.0.0.2:5432, ...).
	Address string `yaml:"address"`
	// Target is "node/service".
	Target string `yaml:"target"`
}

// LoadConfig reads and validates a config file. An empty path gives an
// empty configuration.
func LoadConfig(path string) (*FileConfig, error) {
	if path == "" {
		return &FileConfig{}, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig parses and validates YAML.
func ParseConfig(b []byte) (*FileConfig, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var cfg FileConfig
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document")
	}
	return &cfg, cfg.Validate()
}

// Validate checks the whole configuration.
func (c *FileConfig) Validate() error {
	names := map[string]bool{}
	for i, e := range c.Expose {
		where := fmt.Sprintf("expose[%d]", i)
		if err := identity.ValidateName("service", e.Name); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if names[e.Name] {
			return fmt.Errorf("%s: service %q is exposed twice", where, e.Name)
		}
		names[e.Name] = true
		if err := checkHostPort(e.Address); err != nil {
			return fmt.Errorf("%s (%s): %w", where, e.Name, err)
		}
	}
	addrs := map[string]string{}
	lnames := map[string]bool{}
	for i, l := range c.Listen {
		where := fmt.Sprintf("listen[%d]", i)
		if err := identity.ValidateName("listener", l.Name); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if lnames[l.Name] {
			return fmt.Errorf("%s: listener %q is defined twice", where, l.Name)
		}
		lnames[l.Name] = true
		if err := checkHostPort(l.Address); err != nil {
			return fmt.Errorf("%s (%s): %w", where, l.Name, err)
		}
		if other, dup := addrs[l.Address]; dup {
			return fmt.Errorf("%s (%s): address %s is already used by listener %q; give each listener its own loopback address (127.0.0.2:PORT, 127.0.0.3:PORT, ...)", where, l.Name, l.Address, other)
		}
		addrs[l.Address] = l.Name
		node, svc, ok := strings.Cut(l.Target, "/")
		if !ok || identity.ValidateName("node", node) != nil || identity.ValidateName("service", svc) != nil {
			return fmt.Errorf("%s (%s): target %q must be NODE/SERVICE, for example db-1/postgres", where, l.Name, l.Target)
		}
	}
	return nil
}

func checkHostPort(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil || port == "" {
		return fmt.Errorf("address %q must be HOST:PORT", a)
	}
	if host == "" {
		return fmt.Errorf("address %q needs a host (127.0.0.1 keeps it local)", a)
	}
	return nil
}
