package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"edge/internal/identity"
	"edge/internal/testpeer"
)

// BenchmarkProxyHotPath measures one proxied GET through the whole request
// path over real loopback connections, with the access log off as in the
// shared nginx benchmark: plain (route match, metrics, forwarding headers,
// pooled upstream connection), and with the checks a production route has
// on (a session token opened and checked, a per-openid and a per-IP limit
// decided), and answered from the response cache. Client and upstream are raw loops that allocate nothing per
// request, so allocs/op are edge's.
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
	// Every request but the first answered from the response cache.
	b.Run("cache-hit", func(b *testing.B) { benchProxy(b, "[routes.cache]\nttl = \"1h\"\n", "") })
}

// benchProxy drives edge's plain HTTP listener with raw keep-alive
// connections and a raw upstream that answer without allocating, so the
// allocations per operation are edge's own.
func benchProxy(b *testing.B, routeExtra, authorization string) {
	body := `{"code":0,"data":{"service":"bench-upstream","pong":true,"ts":1700000000,"node":"u1"},"msg":"ok"}`
	answer := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	upstream := testpeer.RawServer(b, func(c net.Conn, br *bufio.Reader) {
		for {
			if !skipHead(br) {
				return
			}
			if _, err := c.Write(answer); err != nil {
				return
			}
		}
	})
	e := startEdgeWith(b, "redirect_http = false", "access = false", fmt.Sprintf(`
[[upstreams]]
name = "app"
targets = [%q]
[[routes]]
name = "api"
path = "/api/"
upstream = "app"
%s`, upstream, routeExtra))
	request := "GET /api/ping HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n"
	if authorization != "" {
		request += "Authorization: " + authorization + "\r\n"
	}
	request += "\r\n"
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		conn, err := net.Dial("tcp", e.addrs.HTTP)
		if err != nil {
			b.Error(err)
			return
		}
		defer conn.Close()
		br := bufio.NewReader(conn)
		req := []byte(request)
		for pb.Next() {
			if _, err := conn.Write(req); err != nil {
				b.Error(err)
				return
			}
			status, length, ok := readAnswerHead(br)
			if !ok || status != "200" {
				b.Errorf("answer: %q", status)
				return
			}
			if _, err := br.Discard(length); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// skipHead reads up to the end of a request head.
func skipHead(br *bufio.Reader) bool {
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return false
		}
		if len(line) <= 2 {
			return true
		}
	}
}

// readAnswerHead reads an answer's head and returns its status and
// Content-Length, without allocating.
func readAnswerHead(br *bufio.Reader) (status string, length int, ok bool) {
	line, err := br.ReadSlice('\n')
	if err != nil || len(line) < 12 {
		return "", 0, false
	}
	switch string(line[9:12]) {
	case "200":
		status = "200"
	default:
		status = "other"
	}
	for {
		line, err = br.ReadSlice('\n')
		if err != nil {
			return "", 0, false
		}
		if len(line) <= 2 {
			return status, length, true
		}
		if v, found := bytes.CutPrefix(line, []byte("Content-Length: ")); found {
			for _, c := range bytes.TrimSpace(v) {
				length = length*10 + int(c-'0')
			}
		}
	}
}
