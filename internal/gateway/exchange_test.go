package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestStalledUploadGets408: a body that stops arriving for longer than
// server.read_timeout gets its 408 and the connection is closed, also when
// little of the body is left (net/http would otherwise wait to read it).
func TestStalledUploadGets408(t *testing.T) {
	up := startBackend(t, "up", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "got %d %v", n, err)
	})
	e := startEdgeWith(t, "redirect_http = false\nread_timeout = \"1s\"", "", fmt.Sprintf("[[upstreams]]\nname = \"up\"\ntargets = [%q]\n[[routes]]\nname = \"r\"\npath = \"/\"\nupstream = \"up\"\n", up.addr))
	for _, framing := range []string{"Content-Length: 1000\r\n\r\nonly a part", "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"} {
		conn, err := net.Dial("tcp", e.addrs.HTTP)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = io.WriteString(conn, "POST /upload HTTP/1.1\r\nHost: api.example.com\r\n"+framing)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			conn.Close()
			t.Fatalf("%q: no answer to a stalled upload: %v", framing, err)
		}
		body, _ := io.ReadAll(resp.Body)
		assertAPIError(t, resp, string(body), 408, 40801)
		if !resp.Close {
			t.Errorf("%q: the 408 does not say the connection closes", framing)
		}
		if n, err := br.Read(make([]byte, 1)); n != 0 || err != io.EOF {
			t.Errorf("%q: the connection stayed open after the 408: %d %v", framing, n, err)
		}
		conn.Close()
	}
}
