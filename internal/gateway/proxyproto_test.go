package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// TestProxyProtocolOnlyFromTrustedSources: real connections to the HTTPS
// (HTTP/1.1 and HTTP/2) and HTTP listeners, from 127.0.0.1 (listed in
// proxy_protocol_from, the balancer) and 127.0.0.2 (anyone else). From the
// balancer, the client address in a v1 or v2 header is the client the
// upstream, the access log and the limits see, and a connection without
// the header is refused; from anyone else a header is never believed.
func TestProxyProtocolOnlyFromTrustedSources(t *testing.T) {
	b := startBackend(t, "b", nil)
	e := startBehindBalancer(t, b, "")
	roots := e.client.Transport.(*http.Transport).TLSClientConfig.RootCAs

	// client dials listener from source, writes header (nil: none) and
	// speaks proto over the connection.
	client := func(listener, source, proto string, header *proxyproto.Header) *http.Client {
		tr := &http.Transport{DisableKeepAlives: true}
		tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
			c, err := d.DialContext(ctx, network, listener)
			if err != nil || header == nil {
				return c, err
			}
			if _, err := header.WriteTo(c); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		}
		tr.TLSClientConfig = e.client.Transport.(*http.Transport).TLSClientConfig.Clone()
		tr.TLSClientConfig.RootCAs = roots
		if proto == "h2" {
			tr.ForceAttemptHTTP2 = true
		} else {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	header := func(version byte, src string) *proxyproto.Header {
		ap := netip.MustParseAddrPort(src)
		dst := netip.MustParseAddrPort("[2001:db8::1]:443")
		if ap.Addr().Is4() {
			dst = netip.MustParseAddrPort("198.51.100.1:443")
		}
		return proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(ap), net.TCPAddrFromAddrPort(dst))
	}
	_, httpsPort, _ := net.SplitHostPort(e.addrs.HTTPS)
	_, httpPort, _ := net.SplitHostPort(e.addrs.HTTP)
	listeners := []struct{ name, addr, url, proto string }{
		{"https h1", e.addrs.HTTPS, "https://api.example.com:" + httpsPort + "/", "http/1.1"},
		{"https h2", e.addrs.HTTPS, "https://api.example.com:" + httpsPort + "/", "h2"},
		{"http h1", e.addrs.HTTP, "http://api.example.com:" + httpPort + "/", "http/1.1"},
	}
	for _, l := range listeners {
		t.Run(l.name, func(t *testing.T) {
			for _, tt := range []struct {
				name, source string
				header       *proxyproto.Header
				clientIP     string // "": refused
			}{
				{"v1 from the balancer", "127.0.0.1", header(1, "203.0.113.7:51000"), "203.0.113.7"},
				{"v2 from the balancer", "127.0.0.1", header(2, "203.0.113.8:51000"), "203.0.113.8"},
				{"v2 IPv6 from the balancer", "127.0.0.1", header(2, "[2001:db8::7]:51000"), "2001:db8::7"},
				{"LOCAL from the balancer", "127.0.0.1", &proxyproto.Header{Version: 2, Command: proxyproto.LOCAL}, "127.0.0.1"},
				{"no header from the balancer", "127.0.0.1", nil, ""},
				{"v1 from anyone else", "127.0.0.2", header(1, "203.0.113.9:51000"), ""},
				{"v2 from anyone else", "127.0.0.2", header(2, "203.0.113.9:51000"), ""},
				{"no header from anyone else", "127.0.0.2", nil, "127.0.0.2"},
			} {
				t.Run(tt.name, func(t *testing.T) {
					resp, err := client(l.addr, tt.source, l.proto, tt.header).Get(l.url)
					if tt.clientIP == "" {
						if err == nil {
							body, _ := io.ReadAll(resp.Body)
							resp.Body.Close()
							if resp.StatusCode < 400 {
								t.Fatalf("served: %d %q", resp.StatusCode, body)
							}
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						t.Fatalf("status %d", resp.StatusCode)
					}
					wantProto := 1
					if l.proto == "h2" {
						wantProto = 2
					}
					if resp.ProtoMajor != wantProto {
						t.Fatalf("spoke %s, want %s", resp.Proto, l.proto)
					}
					got := b.lastRequest()
					if v := got.Header.Get("X-Real-Ip"); v != tt.clientIP {
						t.Errorf("upstream saw X-Real-Ip %q, want %q", v, tt.clientIP)
					}
					if v := got.Header.Get("X-Forwarded-For"); v != tt.clientIP {
						t.Errorf("upstream saw X-Forwarded-For %q, want %q", v, tt.clientIP)
					}
				})
			}
		})
	}
	eventually(t, 5*time.Second, func() bool {
		return strings.Contains(e.stdout.String(), `"client_ip":"203.0.113.7"`) && strings.Contains(e.stdout.String(), `"client_ip":"2001:db8::7"`)
	}, "the access log to name the clients from the PROXY headers")
	if strings.Contains(e.stdout.String(), "203.0.113.9") {
		t.Error("a header from an untrusted source reached the access log")
	}
	// What docs/kubernetes.md tells operators to look for when the
	// balancer's PROXY protocol option is off.
	if !strings.Contains(e.stderr.String(), "proxy protocol signature not present") {
		t.Error("a balancer's connection without the header left no reason in the debug log")
	}
}

// TestProxyProtocolClientFeedsLimits: behind a balancer every connection
// comes from its address, so the connection cap per IP must not count it,
// and the per-IP rate limit and IP lists must see each header's client.
func TestProxyProtocolClientFeedsLimits(t *testing.T) {
	b := startBackend(t, "b", nil)
	e := startBehindBalancer(t, b, limitsBehindBalancer)
	// Held open: without the exemption, the balancer's second connection
	// would be refused at accept.
	held, err := net.Dial("tcp", e.addrs.HTTP)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := proxyproto.HeaderProxyFromAddrs(1, &net.TCPAddr{IP: net.ParseIP("203.0.113.50"), Port: 1}, &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 80}).WriteTo(held); err != nil {
		t.Fatal(err)
	}
	// 203.0.113.1's two requests share one connection: on two, the
	// second could meet the first still counted against
	// max_conns_per_ip (the edge releases it when it has closed its side,
	// which may come after the client read the answer) and be refused at
	// the connection instead of by the limit.
	for _, tt := range []struct {
		client string
		want   []int
	}{
		{"203.0.113.1", []int{200, 429}},
		{"203.0.113.2", []int{200}},
		// Denied in [access]: refused at the connection, as when it
		// connects itself.
		{"203.0.113.66", []int{0}},
	} {
		if got := statusesThroughBalancer(t, e, tt.client, len(tt.want)); !slices.Equal(got, tt.want) {
			t.Errorf("client %s: %v, want %v", tt.client, got, tt.want)
		}
	}

	// proxy_protocol_from needs a restart: a reload that drops it changes
	// neither the listener nor the exemption from the connection cap.
	state := filepath.Join(filepath.Dir(e.cfgPath), "state")
	if err := os.WriteFile(e.cfgPath, []byte(baseConfigWith(state, "redirect_http = false\n", "")+balancerRoutes(b)+limitsBehindBalancer), 0o600); err != nil {
		t.Fatal(err)
	}
	if res, err := e.srv.Reload("test"); res != ReloadApplied || err != nil {
		t.Fatalf("reload: %s %v", res, err)
	}
	if got := getThroughBalancer(t, e, "203.0.113.3"); got != 200 {
		t.Errorf("after a reload without proxy_protocol_from: %d, want 200", got)
	}
}

const limitsBehindBalancer = `
[[limits]]
name = "per_ip"
key = "ip"
rate = "1/m"
burst = 1
[access]
max_conns_per_ip = 1
ip_deny = ["203.0.113.66"]
`

// getThroughBalancer sends one GET over a new connection from the balancer
// (127.0.0.1) with a v2 header naming client, and returns the status, 0
// for a connection closed without an answer.
func getThroughBalancer(t *testing.T, e *edgeUnderTest, client string) int {
	t.Helper()
	return statusesThroughBalancer(t, e, client, 1)[0]
}

// statusesThroughBalancer sends n GETs, one after the other, over one new
// connection from the balancer with a v2 header naming client, and
// returns their statuses, 0 for each one the connection closed without
// answering.
func statusesThroughBalancer(t *testing.T, e *edgeUnderTest, client string, n int) []int {
	t.Helper()
	c, err := net.Dial("tcp", e.addrs.HTTP)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	h := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP(client), Port: 4000}, &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 80})
	if _, err := h.WriteTo(c); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	out := make([]int, n)
	for i := range n {
		req := "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n"
		if i == n-1 {
			req = "GET / HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n"
		}
		if _, err := io.WriteString(c, req); err != nil {
			// Refused at the connection: closed before the request.
			return out
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			// Refused at the connection: closed without an answer.
			return out
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		out[i] = resp.StatusCode
	}
	return out
}

// startBehindBalancer starts edge with 127.0.0.1 as the balancer sending
// PROXY protocol, the HTTP listener proxying too, and every path going to b.
func startBehindBalancer(t *testing.T, b *backend, extra string) *edgeUnderTest {
	t.Helper()
	return startEdgeWith(t, "proxy_protocol_from = [\"127.0.0.1\"]\nredirect_http = false\n", "", balancerRoutes(b)+extra)
}

func balancerRoutes(b *backend) string {
	return fmt.Sprintf("[[upstreams]]\nname = \"b\"\ntargets = [%q]\n[[routes]]\nname = \"b\"\npath = \"/\"\nupstream = \"b\"\n", b.addr)
}

// TestProxyProtocolClientsHaveTheirConnectionCap: behind a balancer that
// sends the PROXY protocol, max_conns_per_ip and the IP lists count the
// client the header names: a client holding its one connection is
// refused a second (closed, no answer) while another client is served,
// and the held connection's end frees its place.
func TestProxyProtocolClientsHaveTheirConnectionCap(t *testing.T) {
	b := startBackend(t, "b", nil)
	e := startBehindBalancer(t, b, "[access]\nmax_conns_per_ip = 1\n")
	hold := func() net.Conn {
		c, err := net.Dial("tcp", e.addrs.HTTP)
		if err != nil {
			t.Fatal(err)
		}
		h := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.ParseIP("203.0.113.7"), Port: 4000}, &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 80})
		if _, err := h.WriteTo(c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	held := hold()
	// The held connection is admitted once edge has read its header: a
	// request on it is answered.
	if _, err := io.WriteString(held, "GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = held.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(held)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the first connection of 203.0.113.7: %v %v", resp, err)
	}
	resp.Body.Close()

	second := hold()
	defer second.Close()
	_ = second.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(second, "GET / HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(second), nil); err == nil {
		resp.Body.Close()
		t.Fatalf("a second connection of 203.0.113.7 over max_conns_per_ip = 1 was answered %d", resp.StatusCode)
	}
	if got := getThroughBalancer(t, e, "203.0.113.8"); got != 200 {
		t.Fatalf("another client: %d, want 200", got)
	}
	if m := e.metric(t, "edge_connections_refused_total"); !strings.Contains(m, `reason="max_conns_per_ip"} 1`) {
		t.Fatalf("refusals:\n%s", m)
	}
	held.Close()
	eventually(t, 10*time.Second, func() bool { return getThroughBalancer(t, e, "203.0.113.7") == 200 }, "203.0.113.7 served again once its connection closed")
}
