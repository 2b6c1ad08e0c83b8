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
	r := httptest.NewRequest("GET", "https://api.example.com/api/orders", nil)
	info := reqctx.New(time.Now())
	defer reqctx.Release(info)
	info.RequestID, info.Route, info.Upstream, info.Target = "abc-1", "api", "app", "127.0.0.1:3000"
	info.ClientIP, info.OpenID = netip.MustParseAddr("192.0.2.7"), "o-user"
	a.write(r, info, 200, 97, time.Millisecond)
	if n := testing.AllocsPerRun(200, func() { a.write(r, info, 200, 97, time.Millisecond) }); n != 0 {
		t.Fatalf("an access log line allocates %v times", n)
	}
}
