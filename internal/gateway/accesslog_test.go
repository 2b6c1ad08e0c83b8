package gateway

import (
	"io"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

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
	mask := []string{"code", "token"}
	a.write(r, info, 200, 97, time.Millisecond, mask)
	if n := testing.AllocsPerRun(200, func() { a.write(r, info, 200, 97, time.Millisecond, mask) }); n != 0 {
		t.Fatalf("an access log line allocates %v times", n)
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
