package config

import (
	"strings"
	"testing"
)

func TestAdminListenerGuard(t *testing.T) {
	const token = `admin_token = "0123456789abcdef0123456789abcdef"`
	cases := []struct {
		name string
		text string
		want []want
	}{
		{"every address without a token", doc(`[server]`, `listen_admin = ":9180"`),
			[]want{{"server.listen_admin", 2, `":9180" is not on loopback: anyone who reaches it could reload edge`}}},
		{"a private address without a token", doc(`[server]`, `listen_admin = "10.0.0.5:9180"`),
			[]want{{"server.listen_admin", 2, `set server.admin_token = "${EDGE_ADMIN_TOKEN}"`}}},
		{"IPv6 everywhere without a token", doc(`[server]`, `listen_admin = "[::]:9180"`),
			[]want{{"server.listen_admin", 2, "is not on loopback"}}},
		{"short token", doc(`[server]`, `listen_admin = ":9180"`, `admin_token = "letmein"`),
			[]want{{"server.admin_token", 3, "shorter than 16 characters"}}},
		{"token with a space", doc(`[server]`, `admin_token = "0123456789abcdef 0123456789abcdef"`),
			[]want{{"server.admin_token", 2, "must be one word"}}},
		{"admin hosts", doc(`[server]`, `admin_hosts = ["Admin.Example", "edge admin", "ok.internal"]`),
			[]want{
				{"server.admin_hosts[0]", 2, `"Admin.Example" is not a host name; write a lowercase name`},
				{"server.admin_hosts[1]", 2, `"edge admin" is not a host name`},
			}},
		{"wrong type for hosts", doc(`[server]`, `admin_hosts = "edge.internal"`),
			[]want{{"server.admin_hosts", 2, "must be an array"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, e := parseIn(t, testDir(t), tc.text)
			wantProblems(t, e, tc.want)
			if e != nil && strings.Contains(e.Error(), "0123456789abcdef") {
				t.Errorf("the token reached the message:\n%v", e)
			}
		})
	}
	for _, text := range []string{
		doc(`[server]`, `listen_admin = "127.0.0.1:9180"`),
		doc(`[server]`, `listen_admin = "127.0.0.2:9180"`),
		doc(`[server]`, `listen_admin = "[::1]:9180"`),
		doc(`[server]`, `listen_admin = "localhost:9180"`),
		doc(`[server]`, `listen_admin = "off"`),
		doc(`[server]`, `listen_admin = ":9180"`, token, `admin_hosts = ["edge", "edge-admin.internal"]`),
	} {
		cfg := mustParse(t, testDir(t), text)
		if strings.Contains(text, "admin_token") && cfg.Server.AdminToken.Value() != "0123456789abcdef0123456789abcdef" {
			t.Errorf("admin_token not kept: %v", cfg.Server.AdminToken)
		}
	}
}

func TestTrustEveryoneWarns(t *testing.T) {
	cfg := mustParse(t, testDir(t), doc(`[server]`, `trusted_proxies = [`, `  "0.0.0.0/0",`, `  "10.0.0.0/8",`, `  "::/0",`, `]`))
	if len(cfg.Warnings) != 2 {
		t.Fatalf("warnings: %v", cfg.Warnings)
	}
	for i, w := range []want{
		{"server.trusted_proxies[0]", 3, "0.0.0.0/0 trusts every peer: any client can set X-Forwarded-For"},
		{"server.trusted_proxies[2]", 5, "::/0 trusts every peer"},
	} {
		got := cfg.Warnings[i]
		if got.Key != w.key || got.Line != w.line || !strings.Contains(got.Msg, w.msg) {
			t.Errorf("warning %d: %+v, want %+v", i, got, w)
		}
	}
	if line := cfg.Warnings[0].In("edge.toml"); !strings.HasPrefix(line, "edge.toml:3: server.trusted_proxies[0]: 0.0.0.0/0 trusts") {
		t.Errorf("formatted: %q", line)
	}
	if cfg := mustParse(t, testDir(t), doc(`[server]`, `trusted_proxies = ["10.0.0.0/8"]`)); len(cfg.Warnings) != 0 {
		t.Errorf("warnings for a narrow list: %v", cfg.Warnings)
	}
}

func TestProxyProtocolFromEveryoneWarns(t *testing.T) {
	cfg := mustParse(t, testDir(t), doc(`[server]`, `proxy_protocol_from = ["10.0.0.0/8", "0.0.0.0/0"]`))
	if len(cfg.Warnings) != 1 {
		t.Fatalf("warnings: %v", cfg.Warnings)
	}
	if line := cfg.Warnings[0].In("edge.toml"); !strings.HasPrefix(line, "edge.toml:2: server.proxy_protocol_from[1]: 0.0.0.0/0 lets every peer send a PROXY protocol header") {
		t.Errorf("formatted: %q", line)
	}
	if got := cfg.Server.ProxyProtocolFrom; len(got) != 2 || got[0].String() != "10.0.0.0/8" {
		t.Errorf("decoded: %v", got)
	}
}
