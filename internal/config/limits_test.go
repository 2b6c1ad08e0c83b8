package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseRate(t *testing.T) {
	cases := []struct {
		in      string
		want    Rate
		wantErr string
	}{
		{"10/s", Rate{10, time.Second}, ""},
		{" 600 / m ", Rate{600, time.Minute}, ""},
		{"5000/h", Rate{5000, time.Hour}, ""},
		{"100000/d", Rate{100000, 24 * time.Hour}, ""},
		{"1000000/s", Rate{1000000, time.Second}, ""},
		{"1000001/s", Rate{}, "too fast"},
		{"10", Rate{}, "not a rate"},
		{"10/w", Rate{}, "unit"},
		{"0/s", Rate{}, "1 or more"},
		{"-3/s", Rate{}, "1 or more"},
		{"1.5/s", Rate{}, "whole number"},
		{"/s", Rate{}, "whole number"},
	}
	for _, tc := range cases {
		got, err := ParseRate(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseRate(%q) error %v, want one mentioning %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	if got := (Rate{600, time.Minute}).Interval(); got != 100*time.Millisecond {
		t.Errorf("Interval = %s", got)
	}
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"10/s", "600/m", "5000/h", "100000/d", "1000001/s", "0/s", "x/y", "", "/", "9223372036854775807/d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err != nil {
			return
		}
		if r.N < 1 || r.Interval() < time.Microsecond {
			t.Fatalf("ParseRate(%q) = %+v accepted out of range", s, r)
		}
		back, err := ParseRate(r.String())
		if err != nil || back != r {
			t.Fatalf("round trip of %q: %q gives %+v, %v", s, r.String(), back, err)
		}
	})
}

func TestParseCIDRList(t *testing.T) {
	in := "# blocklist\n10.0.0.0/8\n  192.0.2.7   # one host\n\n2001:db8::/32\n10.1.2.3/8\n::ffff:198.51.100.0/120\n"
	got, err := ParseCIDRList(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("198.51.100.0/24"),
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for _, bad := range []string{"10.0.0.0/33\n", "ok.example\n", "1.2.3.4/8/9\n", "fe80::1%eth0\n", strings.Repeat("1", MaxCIDRLine+1)} {
		if _, err := ParseCIDRList(strings.NewReader("10.0.0.1\n" + bad)); err == nil {
			t.Errorf("%.40q accepted", bad)
		} else if len(bad) < 100 && !strings.Contains(err.Error(), "line 2") {
			t.Errorf("%q: error %v does not name line 2", bad, err)
		}
	}
}

func FuzzParseCIDRList(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8\n", "# c\n\n192.0.2.1 # x\n", "2001:db8::/32\r\n::1\n", "::ffff:1.2.3.4/100", "1.2.3.4/0", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParseCIDRList(strings.NewReader(s))
		if err != nil {
			return
		}
		for _, p := range ps {
			if !p.IsValid() || p != p.Masked() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
				t.Fatalf("%q gave %v, not a clean network", s, p)
			}
		}
	})
}

func TestParseLimitKey(t *testing.T) {
	cases := []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"openid", []string{"openid"}, false},
		{"openid+route", []string{"openid", "route"}, false},
		{"ip + header:x-api-key", []string{"ip", "header:X-Api-Key"}, false},
		{"appid+openid+route+ip", []string{"appid", "openid", "route", "ip"}, false},
		{"appid+openid+route+ip+header:A", nil, true},
		{"cookie", nil, true},
		{"ip+ip", nil, true},
		{"header:", nil, true},
		{"header:bad name", nil, true},
		{"", nil, true},
	}
	for _, tc := range cases {
		got, err := ParseLimitKey(tc.in)
		if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
			t.Errorf("ParseLimitKey(%q) = %v, %v; want %v (error %v)", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestValidateLimits(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "good.txt"), []byte("10.0.0.0/8\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.txt"), []byte("10.0.0.0/8\nnope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	valid := func() *Config {
		c := &Config{Routes: []Route{{Name: "api"}, {Name: "login"}}}
		c.Limits = []LimitRule{{Name: "per_user", Key: "openid+route", Rate: Rate{10, time.Second}, Routes: []string{"api"}, OnMissingKey: "ip"}}
		c.Limiter.setDefaults()
		c.Bans.setDefaults()
		c.Bans.Threshold = 5
		c.Access.IPDenyFiles = []string{"good.txt"}
		c.Access.UserAgentDeny = []string{"(?i)curl"}
		c.Routes[1].IPAllowFiles = []string{"good.txt"}
		return c
	}
	cases := []struct {
		name   string
		mutate func(c *Config)
		keys   []string
	}{
		{"valid", func(c *Config) {}, nil},
		{"rule problems", func(c *Config) {
			c.Limits = append(c.Limits,
				LimitRule{Name: "per_user", Key: "cookie", Burst: -1, Routes: []string{"apii"}, OnMissingKey: "drop"},
				LimitRule{Name: "bad name!", Key: "ip", Rate: Rate{2000000, 24 * time.Hour}, OnMissingKey: "ip"})
		}, []string{"limits[1].name", "limits[1].key", "limits[1].rate", "limits[1].burst", "limits[1].routes[0]",
			"limits[1].on_missing_key", "limits[2].name", "limits[2].burst"}},
		{"limiter problems", func(c *Config) {
			c.Limiter = Limiter{OnRedisFailure: "fail_opn"}
		}, []string{"limiter.on_redis_failure", "limiter.replicas", "limiter.redis_timeout", "limiter.probe_interval", "limiter.max_keys"}},
		{"ban problems", func(c *Config) {
			c.Bans.Count = []string{"signature", "rate"}
			c.Bans.Window = 0
			c.Bans.MaxBans = 0
		}, []string{"bans.window", "bans.max_bans", "bans.count[1]"}},
		{"bans off are not checked further", func(c *Config) {
			c.Bans = Bans{}
		}, nil},
		{"access problems", func(c *Config) {
			c.Access.IPDenyFiles = []string{"bad.txt", "missing.txt"}
			c.Access.UserAgentDeny = []string{"("}
			c.Access.MaxConns = -1
			c.Routes[0].IPAllow = []netip.Prefix{{}}
		}, []string{"access.ip_deny_files[0]", "access.ip_deny_files[1]", "access.user_agent_deny[0]", "access.max_conns",
			"routes[0].ip_allow[0]"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid()
			tc.mutate(cfg)
			c := &checker{cfg: cfg, dir: dir, lines: map[string]int{}}
			cfg.LimitSections.validate(c)
			for i := range cfg.Routes {
				cfg.Routes[i].RouteAccess.validate(c, indexKey("routes", i))
			}
			var got []string
			for _, p := range c.problems {
				got = append(got, p.Key)
				if p.Msg == "" || strings.ToLower(p.Msg[:1]) != p.Msg[:1] && p.Msg[0] != '"' {
					t.Errorf("%s: message %q should start lowercase", p.Key, p.Msg)
				}
			}
			if !slices.Equal(got, tc.keys) {
				t.Fatalf("problems at %q, want %q\n%v", got, tc.keys, c.problems)
			}
			if tc.keys == nil && !filepath.IsAbs(cfg.Access.IPDenyFiles[0]) {
				t.Fatalf("file path not resolved: %q", cfg.Access.IPDenyFiles[0])
			}
		})
	}
}
