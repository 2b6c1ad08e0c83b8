package gateway

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"edge/internal/identity"
)

// BenchmarkProxyHotPath measures one proxied GET through the whole request
// path over real loopback connections, with the access log off as in the
// shared nginx benchmark: plain (route match, metrics, forwarding headers,
// pooled upstream connection), and with the checks a production route has
// on (a session token opened and checked, a per-openid and a per-IP limit
// decided). The allocations include the Go client's and the upstream's.
func BenchmarkProxyHotPath(b *testing.B) {
	const secret = "bench-session-secret-0123456789abcdef"
	sealer, err := identity.NewSealer([][]byte{[]byte(secret)}, time.Hour, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	token, _, err := sealer.Issue("wxbench", "o-bench-user", "")
	if err != nil {
		b.Fatal(err)
	}
	checks := fmt.Sprintf(`auth = "token"
[[apps]]
name = "bench"
appid = "wxbench"
secret = "bench-app-secret"
[sessions]
secrets = [%q]
[[limits]]
name = "per_openid"
key = "openid"
rate = "10000000/m"
burst = 1000000
routes = ["api"]
[[limits]]
name = "per_ip"
key = "ip"
rate = "10000000/m"
burst = 1000000
routes = ["api"]
`, secret)
	b.Run("plain", func(b *testing.B) { benchProxy(b, "", "") })
	b.Run("token+limits", func(b *testing.B) { benchProxy(b, checks, "Bearer "+token) })
}

func benchProxy(b *testing.B, routeExtra, authorization string) {
	body := []byte(`{"code":0,"data":{"service":"bench-upstream","pong":true,"ts":1700000000,"node":"u1"},"msg":"ok"}`)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = []string{"application/json"}
		w.Header()["Content-Length"] = []string{strconv.Itoa(len(body))}
		_, _ = w.Write(body)
	})}
	go func() { _ = up.Serve(ln) }()
	defer up.Close()

	e := startEdgeWith(b, "redirect_http = false", "access = false", fmt.Sprintf(`
[[upstreams]]
name = "app"
targets = [%q]
[[routes]]
name = "api"
path = "/api/"
upstream = "app"
%s`, ln.Addr().String(), routeExtra))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	url := "http://" + e.addrs.HTTP + "/api/ping"
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, _ := http.NewRequest("GET", url, nil)
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		for pb.Next() {
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}
