package config

import (
	"slices"
	"testing"
)

func TestWAFKeys(t *testing.T) {
	dir := testDir(t)
	cfg := mustParse(t, dir, answersRoute(`waf = "block"`,
		`[[routes]]`, `name = "plain"`, `path = "/plain/"`, `upstream = "a"`,
		`[waf]`, `paranoia_level = 2`, `exclude_rules = [942100]`,
		`[[waf.exclusions]]`, `path = "/api/article"`, `rules = [941100, 941160]`))
	if cfg.Routes[0].WAF != WAFBlock || cfg.Routes[1].WAF != WAFOff {
		t.Errorf("modes %q %q; want block and the default off", cfg.Routes[0].WAF, cfg.Routes[1].WAF)
	}
	w := cfg.WAF
	if w.ParanoiaLevel != 2 || w.AnomalyThreshold != 5 || w.BodyLimit != 128<<10 || !slices.Equal(w.ExcludeRules, []int{942100}) {
		t.Errorf("[waf] %+v", w)
	}
	if len(w.Exclusions) != 1 || w.Exclusions[0].Path != "/api/article" || !slices.Equal(w.Exclusions[0].Rules, []int{941100, 941160}) {
		t.Errorf("exclusions %+v", w.Exclusions)
	}
}

func TestWAFProblems(t *testing.T) {
	dir := testDir(t)
	tests := []struct {
		name  string
		lines []string
		key   string
		want  string
	}{
		{"mode", []string{`waf = "on"`}, "routes[0].waf", `"off", "detect", "block"`},
		{"paranoia", []string{`[waf]`, `paranoia_level = 5`}, "waf.paranoia_level", "1 (the default"},
		{"threshold", []string{`[waf]`, `anomaly_threshold = 0`}, "waf.anomaly_threshold", "1 or more"},
		{"body limit", []string{`[waf]`, `body_limit = "64MB"`}, "waf.body_limit", "at most 16MB"},
		{"rule id", []string{`[waf]`, `exclude_rules = [942100, -3]`}, "waf.exclude_rules[1]", "not a rule id"},
		{"exclusion path", []string{`[[waf.exclusions]]`, `path = "api"`, `rules = [942100]`}, "waf.exclusions[0].path", `starting with "/"`},
		{"exclusion quote", []string{`[[waf.exclusions]]`, `path = "/a\" \"id:1"`, `rules = [942100]`}, "waf.exclusions[0].path", "quotes"},
		{"exclusion rules", []string{`[[waf.exclusions]]`, `path = "/a"`}, "waf.exclusions[0].rules", "is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, e := parseIn(t, dir, answersRoute(tt.lines...))
			wantProblem(t, e, tt.key, tt.want)
		})
	}
}
