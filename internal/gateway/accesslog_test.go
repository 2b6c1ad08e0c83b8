package gateway

import (
	"io"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"edge/internal/config"
	"edge/internal/reqctx"
)

// TestAccessLogLineAllocatesNothing: the line is built in a pooled buffer
// and copied into the buffered writer, so logging every request costs no
// garbage.
func TestAccessLogLineAllocatesNothing(t *testing.T) {
	a := newAccessLog(io.Discard)
	defer a.close()
	r := httptest.NewRequest("GET", "https://api.example.com/api/orders?code=0a1b&page=2", nil)
	info := reqctx.New(time.Now())
	defer reqctx.Release(info)
	info.RequestID, info.Route, info.Upstream, info.Target = "abc-1", "api", "app", "127.0.0.1:3000"
	info.ClientIP, info.OpenID = netip.MustParseAddr("192.0.2.7"), "o-user"
	r.Header.Set("User-Agent", "Mozilla/5.0 MicroMessenger/8.0")
	r.Header.Set("Referer", "https://servicewechat.com/wx1234/1/page-frame.html")
	f := compileAccessFormat(config.Log{AccessFields: config.AccessFields, MaskQuery: []string{"code", "token"}})
	a.write(r, info, 200, 97, time.Millisecond, f)
	if n := testing.AllocsPerRun(200, func() { a.write(r, info, 200, 97, time.Millisecond, f) }); n != 0 {
		t.Fatalf("an access log line allocates %v times", n)
	}
}

// TestAccessFieldKeys: the line's keys are the config's field names, in
// the same order, since the config's index picks the field.
func TestAccessFieldKeys(t *testing.T) {
	if len(config.AccessFields) != int(nFields) {
		t.Fatalf("%d names in config.AccessFields, %d fields", len(config.AccessFields), nFields)
	}
	for i, name := range config.AccessFields {
		if fieldKeys[i] != `,"`+name+`":` {
			t.Errorf("field %d: key %s, name %q", i, fieldKeys[i], name)
		}
	}
}

func TestAccessLineFields(t *testing.T) {
	r := httptest.NewRequest("GET", "https://api.example.com/api/x?token=t&a=1", nil)
	r.Header.Set("User-Agent", `ua "1"`)
	info := reqctx.New(time.Unix(0, 0))
	defer reqctx.Release(info)
	info.Route = "api"
	for _, tc := range []struct {
		fields []string
		want   string
	}{
		{[]string{"status", "query", "user_agent"}, `{"status":200,"query":"token=***&a=1","user_agent":"ua \"1\""}`},
		{[]string{"target", "status"}, `{"status":200}`},
		{[]string{"referer", "openid"}, `{}`},
		{[]string{"route", "duration_ms"}, `{"route":"api","duration_ms":1.500}`},
	} {
		f := compileAccessFormat(config.Log{AccessFields: tc.fields, MaskQuery: []string{"token"}})
		if got := string(appendAccessLine(nil, r, info, 200, 3, 1500*time.Microsecond, f)); got != tc.want+"\n" {
			t.Errorf("%v: %s, want %s", tc.fields, got, tc.want)
		}
	}
}

func TestMaskedQuery(t *testing.T) {
	mask := []string{"code", "token", "phone"}
	for _, tc := range []struct{ in, want string }{
		{"code=0a1b&page=2", "code=***&page=2"},
		{"page=2&token=abc&x", "page=2&token=***&x"},
		{"Code=1&%63ode=2&co%64e=3&TOKEN=4", "Code=***&%63ode=***&co%64e=***&TOKEN=***"},
		{"a=1;phone=13800000000", "a=1;phone=***"},
		{"code", "code"},
		{"code=", "code=***"},
		{"codex=1&xcode=2&co+de=3", "codex=1&xcode=2&co+de=3"},
		{"q=\"x\"&token=a\"b", `q=\"x\"&token=***`},
		{"a=1&&b=2&", "a=1&&b=2&"},
	} {
		if got := string(appendMaskedQuery(nil, tc.in, mask, appendJSONChars)); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestAccessTextLine: access_format writes nginx-style text lines: nginx's
// variable names and edge's, "-" for what a request does not have, the
// masked query in $args, $request_uri and $request, and escapes that keep
// a hostile header inside its quotes and on its line.
func TestAccessTextLine(t *testing.T) {
	if n := len(config.AccessFormatExtras); n != int(fieldUpstreamTime-fieldRequest)+1 {
		t.Fatalf("%d access_format extras, %d fields for them", n, fieldUpstreamTime-fieldRequest+1)
	}
	r := httptest.NewRequest("POST", "https://api.example.com/api/x?code=c0de&a=1", nil)
	r.Header.Set("User-Agent", "ua \"1\"\n{\"forged\":true}")
	info := reqctx.New(time.Date(2026, 11, 30, 18, 20, 3, 0, time.UTC))
	defer reqctx.Release(info)
	info.Route, info.RequestID = "api", "rid-1"
	info.ClientIP = netip.MustParseAddr("192.0.2.7")
	proxied := func(i *reqctx.Info) {
		i.Upstream, i.Target, i.UpstreamDuration = "app", "127.0.0.1:3000", 1200*time.Microsecond
	}
	for _, tc := range []struct {
		format string
		setup  func(*reqctx.Info)
		want   string
	}{
		{`$remote_addr - $openid [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"`, nil,
			`192.0.2.7 - - [30/Nov/2026:18:20:03 +0000] "POST /api/x?code=***&a=1 HTTP/1.1" 201 97 "-" "ua \x221\x22\x0a{\x22forged\x22:true}"`},
		{`$request_method $uri?$args $request_time $upstream_response_time $upstream_addr`, nil,
			`POST /api/x?code=***&a=1 0.002 - -`},
		{`${route}:$request_uri $upstream_response_time $upstream_addr $upstream_ms ${upstream} $$5`, proxied,
			`api:/api/x?code=***&a=1 0.001 127.0.0.1:3000 1.200 app $5`},
		{`$time_iso8601 $request_id $host $server_protocol`, nil,
			`2026-11-30T18:20:03.000Z rid-1 api.example.com HTTP/1.1`},
	} {
		t.Run(tc.format, func(t *testing.T) {
			info.Upstream, info.Target, info.UpstreamDuration = "", "", 0
			if tc.setup != nil {
				tc.setup(info)
			}
			f := compileAccessFormat(config.Log{AccessFormat: tc.format, MaskQuery: []string{"code"}})
			got := string(appendAccessLine(nil, r, info, 201, 97, 2500*time.Microsecond, f))
			if got != tc.want+"\n" {
				t.Fatalf("got  %q\nwant %q", got, tc.want+"\n")
			}
		})
	}
}

// TestAccessTextLineAllocatesNothing: a text line costs no garbage either.
func TestAccessTextLineAllocatesNothing(t *testing.T) {
	a := newAccessLog(io.Discard)
	defer a.close()
	r := httptest.NewRequest("GET", "https://api.example.com/api/orders?code=0a1b&page=2", nil)
	r.Header.Set("User-Agent", "Mozilla/5.0 MicroMessenger/8.0")
	info := reqctx.New(time.Now())
	defer reqctx.Release(info)
	info.ClientIP, info.Route, info.Target = netip.MustParseAddr("192.0.2.7"), "api", "127.0.0.1:3000"
	f := compileAccessFormat(config.Log{AccessFormat: `$remote_addr [$time_local] "$request" $status $body_bytes_sent "$http_user_agent" $request_time $upstream_response_time`, MaskQuery: []string{"code"}})
	a.write(r, info, 200, 97, time.Millisecond, f)
	if n := testing.AllocsPerRun(200, func() { a.write(r, info, 200, 97, time.Millisecond, f) }); n != 0 {
		t.Fatalf("a text access log line allocates %v times", n)
	}
}

// FuzzAccessTextLine: whatever the client sends as path, query and
// User-Agent, a text line is one line, and the quotes of the format are
// the only quotes in it.
func FuzzAccessTextLine(f *testing.F) {
	f.Add("/a", "code=1", "Mozilla")
	f.Add("/a\"b", "x=\"\n", "ua\r\n\"{}")
	f.Add("/\x7f", "a=1;code=%0a", "\\\"")
	format := compileAccessFormat(config.Log{AccessFormat: `"$request" "$http_user_agent" $args`, MaskQuery: []string{"code"}})
	f.Fuzz(func(t *testing.T, path, query, ua string) {
		r := httptest.NewRequest("GET", "/", nil)
		r.URL.Path, r.URL.RawQuery = path, query
		r.Header.Set("User-Agent", ua)
		info := reqctx.New(time.Unix(0, 0))
		defer reqctx.Release(info)
		line := string(appendAccessLine(nil, r, info, 200, 0, 0, format))
		if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") || strings.ContainsAny(line, "\r\x00") {
			t.Fatalf("not one line: %q", line)
		}
		if strings.Count(line, `"`) != 4 {
			t.Fatalf("a quote escaped its field: %q", line)
		}
	})
}
