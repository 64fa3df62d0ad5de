package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/tunnelhq/tunnel/agent/internal/dnsstub"
	"github.com/tunnelhq/tunnel/pkg/api"
	"github.com/tunnelhq/tunnel/pkg/identity"
	"github.com/tunnelhq/tunnel/pkg/suggest"
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
//
// Errors name the key path and the line: "unknown key adress in listen[0]
// (line 7): did you mean address? valid keys: name, address, target".
type FileConfig struct {
	Expose []Expose `yaml:"expose"`
	Listen []Listen `yaml:"listen"`
	// DNS, if set, makes the agent answer DNS on a loopback address for
	// its listeners: NAME.CLUSTER.tunnel is the listener NAME's address
	// (agent/internal/dnsstub).
	DNS *DNSConfig `yaml:"dns"`
	// Direct is "on" (the default, also when empty) or "off": whether
	// this agent's streams to and from other agents may go directly
	// between the agents (QUIC with mutual TLS on the agent's one UDP
	// socket), or always through the gateway's relay. The mapping form
	// direct: {tcp: off} means on, and sets DirectTCP.
	Direct string `yaml:"direct"`
	// DirectTCP is "on" (the default, also when empty) or "off": whether
	// direct streams may also go over TCP on the port number of the
	// agent's UDP socket (peertcp.go), or over QUIC only. From direct:
	// {tcp: off}.
	DirectTCP string `yaml:"-"`
	// SudoersDir is where the agent writes the sudoers drop-ins of SSH
	// sessions granted sudo (roles --sudo); empty means DefaultSudoersDir.
	// TUNNEL_SUDOERS_DIR in the agent's environment overrides it.
	SudoersDir string `yaml:"sudoers_dir"`
}

// DNSConfig is the dns: key: where the agent answers DNS for its
// listeners' names, and an optional upstream for every other name.
type DNSConfig struct {
	// Listen is a loopback IP:PORT, for example 127.0.0.153:53.
	Listen string `yaml:"listen"`
	// Upstream, if set, is the IP[:PORT] of a resolver for names outside
	// CLUSTER.tunnel (refused without it).
	Upstream string `yaml:"upstream"`
}

// DirectOn reports whether the direct path is allowed (direct: on, or not
// given).
func (c *FileConfig) DirectOn() bool { return c.Direct != "off" }

// DirectTCPOn reports whether direct streams may go over TCP: the direct
// path is on and direct: {tcp: off} is not given (nil: no file, on).
func (c *FileConfig) DirectTCPOn() bool { return c == nil || c.DirectOn() && c.DirectTCP != "off" }

// Expose is a local service other nodes may reach (policy permitting).
type Expose struct {
	Name string `yaml:"name"`
	// Address is where the service listens on this VM, host:port.
	Address string `yaml:"address"`
	// Protocol is a hint shown by tunnel ls (postgres, mysql, tcp); with
	// Credentials it says which database protocol the agent speaks.
	Protocol string `yaml:"protocol"`
	// Credentials, if set, makes the agent log in to the database for the
	// caller with a short-lived credential the gateway leases from Vault
	// for each stream (dbcreds.go): the caller connects with any user name
	// and no password.
	Credentials *Credentials `yaml:"credentials"`
}

// Credentials is where a service's database credentials come from.
type Credentials struct {
	// Vault is a path of Vault's database secrets engine,
	// MOUNT/creds/ROLE (database/creds/orders-app).
	Vault string `yaml:"vault"`
}

// Listen is a local listener whose connections go to Target.
type Listen struct {
	Name string `yaml:"name"`
	// Address is the local IP:port to listen on. Several listeners on
	// one port use different loopback addresses (127.0.0.2:5432, ...).
	Address string `yaml:"address"`
	// Target is "node/service".
	Target string `yaml:"target"`
}

// The keys of each level of the file, in the order help shows them.
var (
	topKeys    = []string{"expose", "listen", "direct", "dns", "sudoers_dir"}
	dnsKeys    = []string{"listen", "upstream"}
	directKeys = []string{"tcp"}
	exposeKeys = []string{"name", "address", "protocol", "credentials"}
	credKeys   = []string{"vault"}
	listenKeys = []string{"name", "address", "target"}
)

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

// ParseConfig parses and validates YAML. Its errors name the key path
// (listen[0].address) and the line.
func ParseConfig(b []byte) (*FileConfig, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return &FileConfig{}, nil
		}
		return nil, syntaxError(b, err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		return nil, fmt.Errorf("more than one YAML document (line %d starts another after ---): keep the whole configuration in one", extra.Line)
	case !errors.Is(err, io.EOF):
		return nil, syntaxError(b, err)
	}
	p := &parser{lines: map[string]int{}}
	cfg, err := p.file(&doc)
	if err != nil {
		return nil, err
	}
	return cfg, cfg.validate(p.lines)
}

// syntaxError is the parser's error, with the likely cause first when b
// indents a line with a tab (YAML allows only spaces; the parser's own
// message does not say so).
func syntaxError(b []byte, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	for i, line := range strings.Split(string(b), "\n") {
		indent := line[:len(line)-len(strings.TrimLeft(line, " \t"))]
		if strings.Contains(indent, "\t") {
			return fmt.Errorf("not valid YAML: line %d indents with a tab, and YAML indents with spaces only (%s)", i+1, msg)
		}
	}
	return fmt.Errorf("not valid YAML: %s", msg)
}

// configError is a mistake at a key path, on a line when known.
type configError struct {
	path string
	line int
	msg  string
}

func (e *configError) Error() string {
	if e.line > 0 {
		return fmt.Sprintf("%s (line %d): %s", e.path, e.line, e.msg)
	}
	return fmt.Sprintf("%s: %s", e.path, e.msg)
}

// parser reads the YAML tree into a FileConfig, checking its shape and
// remembering the line of every key path for validate's messages.
type parser struct {
	lines map[string]int
}

func (p *parser) file(doc *yaml.Node) (*FileConfig, error) {
	cfg := &FileConfig{}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return cfg, nil
	}
	root := doc.Content[0]
	if isNull(root) {
		return cfg, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: the configuration must be a mapping with the keys %s", root.Line, strings.Join(topKeys, ", "))
	}
	err := p.mapping(root, "", topKeys, func(key, path string, v *yaml.Node) error {
		var err error
		switch key {
		case "dns":
			d := &DNSConfig{}
			err = p.mapping(v, path, dnsKeys, func(k, kpath string, v *yaml.Node) error {
				sv, err := p.scalar(v, kpath)
				switch k {
				case "listen":
					d.Listen = sv
				case "upstream":
					d.Upstream = sv
				}
				return err
			})
			cfg.DNS = d
		case "direct":
			if v.Kind == yaml.MappingNode {
				// direct: {tcp: off}: on, with options.
				cfg.Direct = "on"
				err = p.mapping(v, path, directKeys, func(k, kpath string, v *yaml.Node) error {
					s, err := p.scalar(v, kpath)
					if err == nil && s != "on" && s != "off" {
						err = &configError{kpath, v.Line, fmt.Sprintf("%q: use on (direct streams may also go over TCP, on the port number of the agent's UDP socket) or off (over QUIC only)", s)}
					}
					cfg.DirectTCP = s
					return err
				})
				break
			}
			if v.Kind == yaml.SequenceNode {
				err = &configError{path, v.Line, "must be on, off or a mapping with the key tcp, not a list"}
				break
			}
			var d string
			if d, err = p.scalar(v, path); err == nil && d != "on" && d != "off" {
				err = &configError{path, v.Line, fmt.Sprintf("%q: use on (streams between agents go directly when the agents can reach each other), off (always through the gateway) or {tcp: off} (directly, over QUIC only)", d)}
			}
			cfg.Direct = d
		case "sudoers_dir":
			var d string
			if d, err = p.scalar(v, path); err == nil && !filepath.IsAbs(d) {
				err = &configError{path, v.Line, fmt.Sprintf("%q: use an absolute directory that sudo reads (its #includedir, usually /etc/sudoers.d)", d)}
			}
			cfg.SudoersDir = d
		case "expose":
			err = p.list(v, path, "services to expose", func(_ int, item *yaml.Node, ipath string) error {
				var e Expose
				err := p.mapping(item, ipath, exposeKeys, func(k, kpath string, v *yaml.Node) error {
					if k == "credentials" {
						c := &Credentials{}
						e.Credentials = c
						return p.mapping(v, kpath, credKeys, func(_, cpath string, v *yaml.Node) error {
							s, err := p.scalar(v, cpath)
							c.Vault = s
							return err
						})
					}
					s, err := p.scalar(v, kpath)
					switch k {
					case "name":
						e.Name = s
					case "address":
						e.Address = s
					case "protocol":
						e.Protocol = s
					}
					return err
				})
				cfg.Expose = append(cfg.Expose, e)
				return err
			})
		case "listen":
			err = p.list(v, path, "listeners", func(_ int, item *yaml.Node, ipath string) error {
				var l Listen
				err := p.mapping(item, ipath, listenKeys, func(k, kpath string, v *yaml.Node) error {
					s, err := p.scalar(v, kpath)
					switch k {
					case "name":
						l.Name = s
					case "address":
						l.Address = s
					case "target":
						l.Target = s
					}
					return err
				})
				cfg.Listen = append(cfg.Listen, l)
				return err
			})
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// mapping walks a mapping whose keys must be among valid, each at most
// once, calling set for each with the key's path.
func (p *parser) mapping(n *yaml.Node, path string, valid []string, set func(key, path string, v *yaml.Node) error) error {
	where := path
	if where == "" {
		where = "the top level"
	}
	if n.Kind == yaml.AliasNode {
		return &configError{where, n.Line, "YAML aliases (*name) are not supported here: write the value out"}
	}
	if n.Kind != yaml.MappingNode {
		return &configError{where, n.Line, fmt.Sprintf("must be a mapping with the keys %s", strings.Join(valid, ", "))}
	}
	p.lines[path] = n.Line
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return &configError{where, k.Line, "a key must be a plain word"}
		}
		key := k.Value
		if !contains(valid, key) {
			in := "in " + where
			if path == "" {
				in = "at the top level"
			}
			msg := fmt.Sprintf("unknown key %s %s (line %d): ", key, in, k.Line)
			if s := suggest.Closest(key, valid); s != "" {
				msg += "did you mean " + s + "? "
			}
			return errors.New(msg + "valid keys: " + strings.Join(valid, ", "))
		}
		kpath := key
		if path != "" {
			kpath = path + "." + key
		}
		if first, dup := seen[key]; dup {
			return &configError{kpath, k.Line, fmt.Sprintf("the key %s is given twice (first at line %d)", key, first)}
		}
		seen[key] = k.Line
		p.lines[kpath] = k.Line
		if err := set(key, kpath, v); err != nil {
			return err
		}
	}
	return nil
}

// list walks a sequence (null is an empty one).
func (p *parser) list(n *yaml.Node, path, what string, item func(i int, n *yaml.Node, path string) error) error {
	if isNull(n) {
		return nil
	}
	if n.Kind == yaml.AliasNode {
		return &configError{path, n.Line, "YAML aliases (*name) are not supported here: write the value out"}
	}
	if n.Kind != yaml.SequenceNode {
		return &configError{path, n.Line, fmt.Sprintf("must be a list of %s, each item starting with \"- \"", what)}
	}
	for i, c := range n.Content {
		if err := item(i, c, fmt.Sprintf("%s[%d]", path, i)); err != nil {
			return err
		}
	}
	return nil
}

// scalar returns a plain value (null is "").
func (p *parser) scalar(n *yaml.Node, path string) (string, error) {
	switch {
	case n.Kind == yaml.AliasNode:
		return "", &configError{path, n.Line, "YAML aliases (*name) are not supported here: write the value out"}
	case n.Kind != yaml.ScalarNode:
		return "", &configError{path, n.Line, "must be a single value, not a list or a mapping"}
	case isNull(n):
		return "", nil
	}
	return n.Value, nil
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Validate checks the whole configuration.
func (c *FileConfig) Validate() error { return c.validate(nil) }

// validate checks the configuration; lines, if not nil, gives the line of
// each key path for the messages.
func (c *FileConfig) validate(lines map[string]int) error {
	line := func(path string) int { return lines[path] }
	if c.DNS != nil {
		listen, err := dnsstub.CheckListen(c.DNS.Listen)
		if err == nil {
			_, err = dnsstub.CheckUpstream(c.DNS.Upstream, listen)
		}
		var ce *dnsstub.ConfigError
		if errors.As(err, &ce) {
			return &configError{ce.Key, line(ce.Key), strings.TrimPrefix(ce.Error(), ce.Key+" ")}
		}
		if err != nil {
			return err
		}
	}
	// missing names the absent key at its item, or the empty value at its
	// key.
	missing := func(item, key, hint string) error {
		path := item + "." + key
		if l, ok := lines[path]; ok {
			return &configError{path, l, "is empty; " + hint}
		}
		if lines != nil {
			return &configError{item, line(item), "missing key " + key + "; " + hint}
		}
		return &configError{path, 0, "is empty; " + hint}
	}
	names := map[string]string{}
	for i, e := range c.Expose {
		item := fmt.Sprintf("expose[%d]", i)
		if e.Name == "" {
			return missing(item, "name", "name the service, for example postgres")
		}
		if err := identity.ValidateName("service", e.Name); err != nil {
			return &configError{item + ".name", line(item + ".name"), nameMessage(err)}
		}
		if e.Name == api.SSHService {
			return &configError{item + ".name", line(item + ".name"), fmt.Sprintf("the service name %q is reserved for this node's SSH endpoint (tunnel ssh reaches it): choose another name", api.SSHService)}
		}
		if first, dup := names[e.Name]; dup {
			return &configError{item + ".name", line(item + ".name"), fmt.Sprintf("service %q is exposed twice (first at %s)", e.Name, where(first, lines))}
		}
		names[e.Name] = item + ".name"
		if e.Address == "" {
			return missing(item, "address", "give the service's HOST:PORT on this machine, for example 127.0.0.1:5432")
		}
		if _, _, msg := checkAddress(e.Address, false); msg != "" {
			return &configError{item + ".address", line(item + ".address"), msg}
		}
		if e.Credentials != nil {
			if err := checkCredentials(e, item, lines, missing); err != nil {
				return err
			}
		}
	}
	type bound struct {
		ip   netip.Addr
		port int
		path string
		name string
		addr string
	}
	var addrs []bound
	lnames := map[string]string{}
	for i, l := range c.Listen {
		item := fmt.Sprintf("listen[%d]", i)
		if l.Name == "" {
			return missing(item, "name", "name the listener, for example orders-db")
		}
		if err := identity.ValidateName("listener", l.Name); err != nil {
			return &configError{item + ".name", line(item + ".name"), nameMessage(err)}
		}
		if first, dup := lnames[l.Name]; dup {
			return &configError{item + ".name", line(item + ".name"), fmt.Sprintf("listener %q is defined twice (first at %s)", l.Name, where(first, lines))}
		}
		lnames[l.Name] = item + ".name"
		if l.Address == "" {
			return missing(item, "address", "give the local IP:PORT to listen on, for example 127.0.0.1:5432")
		}
		ip, port, msg := checkAddress(l.Address, true)
		if msg != "" {
			return &configError{item + ".address", line(item + ".address"), msg}
		}
		for _, b := range addrs {
			switch {
			case b.port != port:
			case b.ip == ip:
				return &configError{item + ".address", line(item + ".address"), fmt.Sprintf(
					"%s is already used by listener %q (%s); give each listener its own loopback address (127.0.0.2:PORT, 127.0.0.3:PORT, ...)",
					l.Address, b.name, where(b.path, lines))}
			case b.ip.IsUnspecified() || ip.IsUnspecified():
				return &configError{item + ".address", line(item + ".address"), fmt.Sprintf(
					"%s conflicts with listener %q on %s (%s): 0.0.0.0 and :: take the port on every address of this machine; give each listener its own loopback address instead",
					l.Address, b.name, b.addr, where(b.path, lines))}
			}
		}
		addrs = append(addrs, bound{ip: ip, port: port, path: item + ".address", name: l.Name, addr: l.Address})
		if l.Target == "" {
			return missing(item, "target", "give the service to reach as NODE/SERVICE, for example db-1/postgres")
		}
		if msg := checkTarget(l.Target); msg != "" {
			return &configError{item + ".target", line(item + ".target"), msg}
		}
	}
	return nil
}

// where names a key path for "first at ...": its line when known.
func where(path string, lines map[string]int) string {
	if l, ok := lines[path]; ok && l > 0 {
		return fmt.Sprintf("line %d", l)
	}
	return path
}

// nameMessage is identity's message without its "invalid name: " prefix.
func nameMessage(err error) string {
	return strings.TrimPrefix(err.Error(), identity.ErrInvalidName.Error()+": ")
}

// checkAddress checks HOST:PORT. A listener's host must be an IP address
// (or localhost), since it is bound on this machine; a service's may be a
// host name. It returns the address and port, or a message.
func checkAddress(a string, listener bool) (netip.Addr, int, string) {
	host, portStr, err := net.SplitHostPort(a)
	if err != nil {
		return netip.Addr{}, 0, fmt.Sprintf("%q must be HOST:PORT, for example 127.0.0.1:5432", a)
	}
	if host == "" {
		return netip.Addr{}, 0, fmt.Sprintf("%q needs a host (127.0.0.1 keeps it local)", a)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || strings.HasPrefix(portStr, "+") {
		return netip.Addr{}, 0, fmt.Sprintf("the port of %q must be a number from 1 to 65535", a)
	}
	if port < 1 || port > 65535 {
		return netip.Addr{}, 0, fmt.Sprintf("port %d of %q is out of range: use 1 to 65535", port, a)
	}
	ip, err := netip.ParseAddr(host)
	if err == nil && ip.Zone() == "" {
		return ip.Unmap(), port, ""
	}
	switch {
	case strings.EqualFold(host, "localhost"):
		return netip.MustParseAddr("127.0.0.1"), port, ""
	case listener:
		return netip.Addr{}, 0, fmt.Sprintf("the host of %q must be an IP address of this machine, such as 127.0.0.1 (a loopback address keeps the listener local)", a)
	case !validHostName(host):
		return netip.Addr{}, 0, fmt.Sprintf("the host of %q is neither an IP address nor a host name", a)
	}
	return netip.Addr{}, port, ""
}

// validHostName accepts DNS names: labels of letters, digits and '-'.
func validHostName(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// checkTarget checks NODE/SERVICE and returns a message, or "".
func checkTarget(t string) string {
	node, svc, ok := strings.Cut(t, "/")
	if !ok || strings.Contains(svc, "/") {
		return fmt.Sprintf("target %q must be NODE/SERVICE, for example db-1/postgres", t)
	}
	if err := identity.ValidateName("node", node); err != nil {
		return fmt.Sprintf("target %q must be NODE/SERVICE: %s", t, nameMessage(err))
	}
	if err := identity.ValidateName("service", svc); err != nil {
		return fmt.Sprintf("target %q must be NODE/SERVICE: %s", t, nameMessage(err))
	}
	return ""
}
