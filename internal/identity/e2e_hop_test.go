package identity_test

// Issue 10, items 13 and 14, through the real binary: the hop-by-hop
// machinery of HTTP/1.1 (Connection, chunked trailers) must not let a client
// remove the identity edge sets or add one of its own.

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// TestE2EConnectionHeaderCannotDropIdentity: names listed in Connection are
// the client's own hop-by-hop headers; they never remove the identity
// headers edge adds, on the lean path or the WebSocket one.
func TestE2EConnectionHeaderCannotDropIdentity(t *testing.T) {
	t.Parallel()
	plat, up := startFakePlatform(t), startUpstream(t)
	e := testpeer.StartEdge(t, "", edgeConfig(plat, up, ""))
	c := e.Client(t, false)
	token, signKey := login(t, e, c, "grace.1")
	const dropIdentity = "X-WX-OPENID, X-WX-APPID, X-WX-UNIONID, x_wx_openid"

	for _, tc := range []struct {
		route, path string
		auth        func(req *http.Request)
	}{
		{"token", "/tok/x", func(req *http.Request) { req.Header.Set("Authorization", "Bearer "+token) }},
		{"signed", "/api/x", func(req *http.Request) { sign(t, req, token, signKey, nil) }},
	} {
		t.Run(tc.route, func(t *testing.T) {
			req := newRequest(t, http.MethodGet, e.URL("127.0.0.1", tc.path), nil)
			tc.auth(req)
			req.Header.Set("Connection", dropIdentity)
			status, got, a := call(t, c, req)
			if status != http.StatusOK {
				t.Fatalf("HTTP %d %+v", status, a)
			}
			assertIdentity(t, got, "grace")
		})
	}

	t.Run("websocket", func(t *testing.T) {
		req := newRequest(t, http.MethodGet, e.URL("127.0.0.1", "/ws/chat"), nil)
		sign(t, req, token, signKey, nil)
		req.Header.Set("Connection", "Upgrade, "+dropIdentity)
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		assertIdentity(t, websocketHello(t, e, req), "grace")
	})
}

func assertIdentity(t *testing.T, got echo, user string) {
	t.Helper()
	if got.OpenID != openidFor(user) || got.AppID != e2eAppID || got.UnionID != unionidFor(user) {
		t.Errorf("upstream got openid %q, appid %q, unionid %q; want %q, %q, %q",
			got.OpenID, got.AppID, got.UnionID, openidFor(user), e2eAppID, unionidFor(user))
	}
}

// websocketHello sends an upgrade request as written (a WebSocket library
// would rewrite its Connection header) and returns the echo the upstream
// sends as its first message.
func websocketHello(t *testing.T, e *testpeer.EdgeProcess, req *http.Request) echo {
	t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(e.Dir, "state", "internal", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	conn, err := tls.Dial("tcp", e.HTTPS, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("upgrade answered %d: %s", resp.StatusCode, b)
	}
	// One unmasked server frame: FIN+opcode, then a 7-bit, 16-bit or 64-bit length.
	var head [2]byte
	if _, err := io.ReadFull(br, head[:]); err != nil {
		t.Fatal(err)
	}
	n := uint64(head[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		_, err = io.ReadFull(br, ext[:])
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		_, err = io.ReadFull(br, ext[:])
		n = binary.BigEndian.Uint64(ext[:])
	}
	if err != nil || n > 1<<16 {
		t.Fatalf("frame length %d: %v", n, err)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(br, payload); err != nil {
		t.Fatal(err)
	}
	var got echo
	if err := json.Unmarshal(payload, &got); err != nil {
		t.Fatalf("first WebSocket message %q: %v", payload, err)
	}
	return got
}

// TestE2EIdentityNeverArrivesAsTrailer: a chunked request's trailer section
// reaches the upstream's framework as request data, so a trailer naming an
// identity, signature or forwarding header, in any spelling, must not pass.
// An ordinary trailer still does.
func TestE2EIdentityNeverArrivesAsTrailer(t *testing.T) {
	t.Parallel()
	plat, up := startFakePlatform(t), startUpstream(t)
	e := testpeer.StartEdge(t, "", edgeConfig(plat, up, ""))
	token, signKey := login(t, e, e.Client(t, false), "heidi.1")
	body := []byte(`{"item":1}`)
	cases := []struct {
		route, path string
		auth        func(req *http.Request)
		wantOpenID  string
	}{
		{"none", "/open/x", func(*http.Request) {}, ""},
		{"token", "/tok/x", func(req *http.Request) { req.Header.Set("Authorization", "Bearer "+token) }, openidFor("heidi")},
		{"signed", "/api/x", func(req *http.Request) { sign(t, req, token, signKey, body) }, openidFor("heidi")},
	}
	for _, h2 := range []bool{false, true} {
		c := e.Client(t, h2)
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/h2=%v", tc.route, h2), func(t *testing.T) {
				req := newRequest(t, http.MethodPost, e.URL("127.0.0.1", tc.path), nil)
				// A reader of unknown length: the body goes chunked (h1) or
				// in DATA frames (h2), followed by the trailers.
				req.Body = io.NopCloser(io.MultiReader(strings.NewReader(string(body))))
				req.ContentLength = -1
				req.Trailer = http.Header{
					"X-WX-OPENID": {"forged-1"}, "x_wx_openid": {"forged-2"}, "X-Wx-Appid": {"forged-appid"},
					"X-Edge-Signature": {"forged-sig"}, "X-Forwarded-For": {"forged-xff"}, "X-Real-Ip": {"forged-ip"},
					"X-Checksum": {"kept"},
				}
				tc.auth(req)
				status, got, a := call(t, c, req)
				if status != http.StatusOK {
					t.Fatalf("HTTP %d %+v", status, a)
				}
				if got.OpenID != tc.wantOpenID || len(got.Forged) > 0 || got.Body != string(body) {
					t.Errorf("upstream got openid %q (want %q), body %q and forged fields %q", got.OpenID, tc.wantOpenID, got.Body, got.Forged)
				}
				if tc.route != "signed" && got.Trailer["X-Checksum"] != "kept" {
					t.Errorf("an ordinary trailer did not arrive: %q", got.Trailer)
				}
			})
		}
	}
}
