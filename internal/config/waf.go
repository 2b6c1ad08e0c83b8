package config

import (
	"strings"
)

// WAF is the [waf] section: the OWASP Core Rule Set settings shared by
// every route with waf = "detect" or "block" (ModSecurity's names in the
// comments):
//
//	[waf]
//	paranoia_level    = 1
//	anomaly_threshold = 5
//	body_limit        = "128KB"
//	exclude_rules     = [942100]
//	[[waf.exclusions]]
//	path  = "/api/article"
//	rules = [941100, 941160]
type WAF struct {
	// ParanoiaLevel is CRS's tx.blocking_paranoia_level, 1 (default) to 4:
	// each level adds rules that catch more and misfire more.
	ParanoiaLevel int `toml:"paranoia_level"`
	// AnomalyThreshold is CRS's tx.inbound_anomaly_score_threshold
	// (default 5: one critical match refuses a request).
	AnomalyThreshold int `toml:"anomaly_threshold"`
	// BodyLimit is the most of a body parsed for inspection: of a JSON,
	// form or XML body, and of a multipart body less its files' contents
	// (SecRequestBodyNoFilesLimit, default 128KB); a larger one is
	// refused with 413 on a block route (SecRequestBodyLimitAction Reject).
	BodyLimit ByteSize `toml:"body_limit"`
	// ExcludeRules are rule ids removed everywhere (SecRuleRemoveById).
	ExcludeRules []int `toml:"exclude_rules"`
	// Exclusions remove rules for the paths under a prefix.
	Exclusions []WAFExclusion `toml:"exclusions"`
}

// WAFExclusion removes Rules for requests whose path starts with Path
// (SecRule REQUEST_FILENAME "@beginsWith ..." "ctl:ruleRemoveById=...").
type WAFExclusion struct {
	Path  string `toml:"path"`
	Rules []int  `toml:"rules"`
}

// The route's waf = modes.
const (
	WAFOff    = "off"
	WAFDetect = "detect"
	WAFBlock  = "block"
)

// maxWAFBody bounds what one request holds in memory for inspection.
const maxWAFBody = 16 << 20

func (w *WAF) setDefaults() {
	w.ParanoiaLevel = 1
	w.AnomalyThreshold = 5
	w.BodyLimit = 128 << 10
}

func (w *WAF) validate(c *checker) {
	if w.ParanoiaLevel < 1 || w.ParanoiaLevel > 4 {
		c.add("waf.paranoia_level", "%d is not a paranoia level; write 1 (the default, fewest false positives) to 4", w.ParanoiaLevel)
	}
	if w.AnomalyThreshold < 1 {
		c.add("waf.anomaly_threshold", "must be 1 or more; 5 (the default) refuses a request on one critical match")
	}
	if w.BodyLimit <= 0 || w.BodyLimit > maxWAFBody {
		c.add("waf.body_limit", `must be more than 0 and at most 16MB (the body inspected is held in memory), like "128KB"`)
	}
	checkRuleIDs(c, "waf.exclude_rules", w.ExcludeRules)
	for i, e := range w.Exclusions {
		key := indexKey("waf.exclusions", i)
		switch {
		case !strings.HasPrefix(e.Path, "/"):
			c.add(key+".path", `%q must be a path prefix starting with "/", like "/api/article"`, e.Path)
		case strings.ContainsFunc(e.Path, func(r rune) bool { return r <= ' ' || r == '"' || r == '\'' || r == '\\' || r == 0x7f }):
			c.add(key+".path", "%q must not hold spaces, quotes, backslashes or control characters", e.Path)
		}
		if len(e.Rules) == 0 {
			c.add(key+".rules", "is missing; list the rule ids to remove on this path, as the access log's waf_rules shows them, like [942100]")
		}
		checkRuleIDs(c, key+".rules", e.Rules)
	}
}

func checkRuleIDs(c *checker, key string, ids []int) {
	for i, id := range ids {
		if id < 1 {
			c.add(indexKey(key, i), "%d is not a rule id; copy the ids from the access log's waf_rules, like 942100", id)
		}
	}
}

func (r *Route) validateWAF(c *checker, key string) {
	c.oneOf(key+".waf", r.WAF, WAFOff, WAFDetect, WAFBlock)
}

// WAFOn reports whether the route's requests go through the firewall.
func (r *Route) WAFOn() bool { return r.WAF == WAFDetect || r.WAF == WAFBlock }
