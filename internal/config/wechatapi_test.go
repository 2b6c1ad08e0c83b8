package config

import (
	"strings"
	"testing"
)

// wechatApp is a valid WeChat app on lines 1-4.
var wechatApp = []string{`[[apps]]`, `name = "shop"`, `appid = "wx00000000000000a1"`, `secret = "app-secret-value"`}

func withApp(lines ...string) string {
	return doc(append(append([]string{}, wechatApp...), append([]string{`[sessions]`, `secrets = ["0123456789abcdef0123456789abcdef"]`}, lines...)...)...)
}

func TestWechatAPIProblems(t *testing.T) {
	cases := []struct {
		name string
		text string
		want []want
	}{
		{"listener beyond loopback", withApp(`[server]`, `listen_wechat_api = ":9190"`),
			[]want{{"server.listen_wechat_api", 8, `":9190" is not on loopback: anyone who reaches it calls WeChat as your apps`}}},
		{"listener not host:port", withApp(`[server]`, `listen_wechat_api = "9190"`),
			[]want{{"server.listen_wechat_api", 8, `"9190" is not host:port`}}},
		{"listener shares the admin address", withApp(`[server]`, `listen_wechat_api = "127.0.0.1:9180"`),
			[]want{{"server.listen_wechat_api", 8, "is also used by another listener"}}},
		{"no wechat app", doc(`[server]`, `listen_wechat_api = "127.0.0.1:9190"`),
			[]want{{"server.listen_wechat_api", 2, `no [[apps]] entry has platform = "wechat"`}}},
		{"bad values", withApp(`[wechat_api]`, `base_url = "api.weixin.qq.com"`, `timeout = "0s"`, `max_concurrent = 0`, `max_body = 10`),
			[]want{
				{"wechat_api.base_url", 8, `"api.weixin.qq.com" is not an absolute http:// or https:// URL`},
				{"wechat_api.timeout", 9, "must be more than 0 and at most 10m"},
				{"wechat_api.max_concurrent", 10, "must be from 1 to 10000, not 0"},
				{"wechat_api.max_body", 11, "must be at least 1KB"},
			}},
		{"base url with a path", withApp(`[wechat_api]`, `base_url = "https://proxy.internal/cgi-bin"`),
			[]want{{"wechat_api.base_url", 8, "must be a scheme and host only"}}},
		{"unknown key", withApp(`[wechat_api]`, `base = "https://x"`),
			[]want{{"wechat_api.base", 8, `did you mean "base_url"?`}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, e := parseIn(t, testDir(t), tc.text)
			wantProblems(t, e, tc.want)
			if e != nil && strings.Contains(e.Error(), "app-secret-value") {
				t.Errorf("the secret reached the message:\n%v", e)
			}
		})
	}

	cfg := mustParse(t, testDir(t), withApp(`[server]`, `listen_wechat_api = "0.0.0.0:9190"`, `[wechat_api]`, `allow_remote = true`, `base_url = "http://10.0.0.8:8080"`))
	if len(cfg.Warnings) != 2 || cfg.Warnings[0].Key != "server.listen_wechat_api" || cfg.Warnings[1].Key != "wechat_api.base_url" {
		t.Fatalf("warnings: %v", cfg.Warnings)
	}
	cfg = mustParse(t, testDir(t), withApp())
	if cfg.Server.WechatAPIOn() || cfg.WechatAPI.BaseURL != DefaultWechatAPIBase || cfg.WechatAPI.MaxConcurrent != DefaultWechatAPIMaxConcurrent {
		t.Fatalf("defaults: %+v %+v", cfg.Server.ListenWechatAPI, cfg.WechatAPI)
	}
}

func TestWechatAPIRestartOnly(t *testing.T) {
	dir := testDir(t)
	old := mustParse(t, dir, withApp(`[server]`, `listen_wechat_api = "127.0.0.1:9190"`))
	next := mustParse(t, dir, withApp(`[server]`, `listen_wechat_api = "127.0.0.1:9191"`, `[wechat_api]`, `timeout = "5s"`))
	got := strings.Join(RestartNeeded(old, next), ",")
	if got != "server.listen_wechat_api,wechat_api" {
		t.Fatalf("restart-only keys: %s", got)
	}
}
