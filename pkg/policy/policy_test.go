package policy

import "testing"

func TestDecide(t *testing.T) {
	rules := []Rule{
		{ID: 1, Allow: true, From: "app-1", To: "db-1/postgres"},
		{ID: 2, Allow: true, From: "app-*", To: "cache-*/redis"},
		{ID: 3, Allow: false, From: "app-2", To: "cache-9/redis"},
		{ID: 4, Allow: true, From: "*", To: "metrics/*"},
	}
	tests := []struct {
		from, node, service string
		want                bool
		rule                int64
	}{
		{"app-1", "db-1", "postgres", true, 1},
		{"app-2", "db-1", "postgres", false, 0},   // default deny
		{"app-1", "db-1", "mysql", false, 0},      // other service
		{"app-2", "cache-1", "redis", true, 2},    // glob
		{"app-2", "cache-9", "redis", false, 3},   // deny wins over rule 2
		{"app-1", "cache-9", "redis", true, 2},    // deny is only for app-2
		{"anyone", "metrics", "prom", true, 4},    // wildcards
		{"app-1", "db-1/x", "postgres", false, 0}, // no slash games
	}
	for _, tt := range tests {
		d := Decide(rules, tt.from, tt.node, tt.service)
		if d.Allowed != tt.want || d.RuleID != tt.rule {
			t.Errorf("Decide(%s -> %s/%s) = %+v; want allowed=%v rule=%d", tt.from, tt.node, tt.service, d, tt.want, tt.rule)
		}
		if d.Reason == "" {
			t.Errorf("Decide(%s -> %s/%s) gave no reason", tt.from, tt.node, tt.service)
		}
	}
	if d := Decide(nil, "a", "b", "c"); d.Allowed {
		t.Error("no rules allowed a stream; want default deny")
	}
}

func TestAllowedByPatterns(t *testing.T) {
	p := []string{"db-*/postgres", "web-1/*"}
	for _, tt := range []struct {
		node, svc string
		want      bool
	}{{"db-1", "postgres", true}, {"db-1", "mysql", false}, {"web-1", "http", true}, {"web-2", "http", false}} {
		if got := AllowedByPatterns(p, tt.node, tt.svc); got != tt.want {
			t.Errorf("AllowedByPatterns(%s/%s) = %v; want %v", tt.node, tt.svc, got, tt.want)
		}
	}
}

func TestValidPattern(t *testing.T) {
	for _, p := range []string{"db-1/postgres", "*/*", "db-[12]/x"} {
		if err := ValidPattern(p); err != nil {
			t.Errorf("ValidPattern(%q) = %v; want nil", p, err)
		}
	}
	for _, p := range []string{"db-1", "/x", "x/", "a/b/c", "db-[/x"} {
		if err := ValidPattern(p); err == nil {
			t.Errorf("ValidPattern(%q) = nil; want an error", p)
		}
	}
}
