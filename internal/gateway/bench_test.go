package gateway

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
)

// BenchmarkProxyHotPath measures one proxied GET through the whole request
// path (route match, metrics, forwarding headers, pooled upstream
// connection) over real loopback connections, with the access log off as
// in the shared nginx benchmark.
func BenchmarkProxyHotPath(b *testing.B) {
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
`, ln.Addr().String()))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	url := "http://" + e.addrs.HTTP + "/api/ping"
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
