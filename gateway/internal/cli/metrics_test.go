package cli

import "testing"

// TestMetricsAddrSources: --metrics-addr comes from the command line, then
// TUNNEL_GATEWAY_METRICS_ADDR, then the configuration file.
func TestMetricsAddrSources(t *testing.T) {
	file := writeConfig(t, "metrics-addr: 127.0.0.1:9090\n")
	for _, c := range []struct {
		name, env string
		args      []string
		want      string
	}{
		{"file", "", nil, "127.0.0.1:9090"},
		{"environment over the file", "127.0.0.1:9191", nil, "127.0.0.1:9191"},
		{"command line over both", "127.0.0.1:9191", []string{"--metrics-addr", ":9292"}, ":9292"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv("TUNNEL_GATEWAY_METRICS_ADDR", c.env)
			fs := runFlags(t, c.args...)
			if err := applyEnv(fs); err != nil {
				t.Fatal(err)
			}
			if err := applyConfigFile(fs, file); err != nil {
				t.Fatal(err)
			}
			if got := flagValue(t, fs, "metrics-addr"); got != c.want {
				t.Errorf("--metrics-addr = %q; want %q", got, c.want)
			}
		})
	}
}
