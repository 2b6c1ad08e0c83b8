package gateway

import (
	"io"
	"net/http/httptest"
	"net/netip"
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
		if got := string(appendMaskedQuery(nil, tc.in, mask)); got != tc.want {
			t.Errorf("%q: got %q, want %q", tc.in, got, tc.want)
		}
	}
}
