package cli

// The gateway's configuration file and its environment variables.
//
// Precedence, highest first: the command line, the environment
// (envSecrets), the file (--config), the flags' defaults. Every flag of
// tunnel-gateway run is a key of the file, spelt as the flag without its
// dashes:
//
//	data-dir: /var/lib/tunnel
//	api-addr: :8443
//	ssh-addr: :2222
//	name: [gw.example.com, 192.0.2.10]   # repeatable flags take a list
//	idle-timeout: 30m
//
// Unknown keys are errors naming the key, the line and the closest valid
// key, so a typo never silently leaves a default in place.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/tunnelhq/tunnel/pkg/secretfile"
	"github.com/tunnelhq/tunnel/pkg/suggest"
)

// configFlag is the flag that names the file; it is not a key of the file.
const configFlag = "config"

// maxConfigSize bounds the file: a configuration is a few hundred bytes.
const maxConfigSize = 1 << 20

// envSecret maps an environment variable to a flag. When file is true the
// variable names a file whose contents are the flag's value (the store's
// URL holds the database password); otherwise its value is the flag's
// value (a path).
type envSecret struct {
	env  string
	flag string
	file bool
	what string
}

// envSecrets are the environment variables tunnel-gateway reads, so that a
// service unit or a compose file passes no secret on the command line.
var envSecrets = []envSecret{
	{env: "TUNNEL_GATEWAY_KEK_FILE", flag: "kek-file", what: "path of the key-encryption key file"},
	{env: "TUNNEL_GATEWAY_STORE_FILE", flag: "store", file: true, what: "file holding the PostgreSQL URL of the store (with its password)"},
	{env: "TUNNEL_GATEWAY_TLS_CERT_FILE", flag: "tls-cert", what: "path of the API's PEM certificate chain"},
	{env: "TUNNEL_GATEWAY_TLS_KEY_FILE", flag: "tls-key", what: "path of the API's PEM private key"},
	{env: "TUNNEL_GATEWAY_AUDIT_LOG", flag: "audit-log", what: "file the audit log is appended to as JSON lines"},
	{env: "TUNNEL_GATEWAY_METRICS_ADDR", flag: "metrics-addr", what: "address of the metrics and health endpoints"},
}

// applyEnv sets, from the environment variables of envSecrets, the flags
// of fs that the command line did not set. Flags fs does not define are
// ignored, so it serves init as well as run. Call it before
// applyConfigFile: the environment overrides the file.
func applyEnv(fs *pflag.FlagSet) error {
	for _, e := range envSecrets {
		v, ok := os.LookupEnv(e.env)
		if !ok || v == "" {
			continue
		}
		f := fs.Lookup(e.flag)
		if f == nil || f.Changed {
			continue
		}
		if e.file {
			s, err := secretfile.Read(v)
			if err != nil {
				return fmt.Errorf("%s (the %s): %w", e.env, e.what, err)
			}
			v = strings.TrimSpace(s)
		}
		if err := fs.Set(e.flag, v); err != nil {
			return fmt.Errorf("%s: not a valid --%s: %w", e.env, e.flag, err)
		}
	}
	return nil
}

// applyConfigFile sets, from the YAML file at path, every flag of fs that
// is not set yet (by the command line or applyEnv). An empty path does
// nothing.
func applyConfigFile(fs *pflag.FlagSet, path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read the config file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return fmt.Errorf("read the config file %s: %w", path, err)
	}
	if len(b) > maxConfigSize {
		return fmt.Errorf("config %s: larger than 1 MiB; is this the right file?", path)
	}
	if err := applyConfig(fs, b); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// applyConfig applies YAML bytes to fs (applyConfigFile without the file).
func applyConfig(fs *pflag.FlagSet, b []byte) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return fmt.Errorf("not valid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		return fmt.Errorf("more than one YAML document (line %d starts another after ---): keep the whole configuration in one", extra.Line)
	case !errors.Is(err, io.EOF):
		return fmt.Errorf("not valid YAML: %s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) == 0 {
		return nil
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: the configuration must be a mapping of flag names to values, for example api-addr: :8443", root.Line)
	}
	valid := configKeys(fs)
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: a key must be a flag name, for example api-addr", k.Line)
		}
		key := k.Value
		fl := fs.Lookup(key)
		if fl == nil || key == configFlag || key == "help" {
			return unknownKey(key, k.Line, valid)
		}
		if first, dup := seen[key]; dup {
			return fmt.Errorf("%s (line %d): the key is given twice (first at line %d)", key, k.Line, first)
		}
		seen[key] = k.Line
		values, err := configValues(key, v, fl)
		if err != nil {
			return err
		}
		if fl.Changed {
			continue // the command line (or the environment) wins
		}
		if err := setFlag(fs, fl, values); err != nil {
			return fmt.Errorf("%s (line %d): %w", key, v.Line, err)
		}
	}
	return nil
}

// configValues returns a key's value(s) as the strings the flag parses.
func configValues(key string, v *yaml.Node, fl *pflag.Flag) ([]string, error) {
	_, repeatable := fl.Value.(pflag.SliceValue)
	switch {
	case v.Kind == yaml.AliasNode:
		return nil, fmt.Errorf("%s (line %d): YAML aliases (*name) are not supported here: write the value out", key, v.Line)
	case v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null":
		return nil, fmt.Errorf("%s (line %d): no value: give one (\"\" for an empty one) or remove the key", key, v.Line)
	case v.Kind == yaml.ScalarNode:
		return []string{v.Value}, nil
	case v.Kind == yaml.SequenceNode && repeatable:
		out := make([]string, 0, len(v.Content))
		for j, item := range v.Content {
			if item.Kind != yaml.ScalarNode || item.ShortTag() == "!!null" {
				return nil, fmt.Errorf("%s[%d] (line %d): must be a single value", key, j, item.Line)
			}
			out = append(out, item.Value)
		}
		return out, nil
	case v.Kind == yaml.SequenceNode:
		return nil, fmt.Errorf("%s (line %d): must be a single value, not a list (only repeatable flags take a list)", key, v.Line)
	}
	return nil, fmt.Errorf("%s (line %d): must be a single value, not a mapping", key, v.Line)
}

// setFlag gives fl its values as if they were typed on the command line.
func setFlag(fs *pflag.FlagSet, fl *pflag.Flag, values []string) error {
	if sv, ok := fl.Value.(pflag.SliceValue); ok {
		if err := sv.Replace(values); err != nil {
			return err
		}
		fl.Changed = true
		return nil
	}
	if err := fs.Set(fl.Name, values[0]); err != nil {
		// pflag's message repeats the flag; keep what it says about the value.
		msg := err.Error()
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		return fmt.Errorf("%q is not a valid %s (%s)", values[0], fl.Value.Type(), msg)
	}
	return nil
}

// configKeys lists the keys a file may hold: the flags of fs but --config
// and --help.
func configKeys(fs *pflag.FlagSet) []string {
	var keys []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Name != configFlag && f.Name != "help" && !f.Hidden {
			keys = append(keys, f.Name)
		}
	})
	sort.Strings(keys)
	return keys
}

func unknownKey(key string, line int, valid []string) error {
	if key == configFlag {
		return fmt.Errorf("config (line %d): a config file cannot name another one; remove the key", line)
	}
	msg := fmt.Sprintf("unknown key %s (line %d): ", key, line)
	if s := suggestKey(key, valid); s != "" {
		msg += "did you mean " + s + "? "
	}
	return errors.New(msg + "the keys are the flags of tunnel-gateway run without their dashes (tunnel-gateway run --help lists them)")
}

// suggestKey returns the valid key closest to key, if it is close enough to
// be a typo. "--api-addr", "api_addr" and "API-Addr" all lead to api-addr.
func suggestKey(key string, valid []string) string {
	return suggest.Closest(strings.ReplaceAll(strings.TrimLeft(key, "-"), "_", "-"), valid)
}
