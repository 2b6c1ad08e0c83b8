package tls

import (
	"net"
	"syscall"
)

// quickAckReads covers the reads of a TLS handshake and the first request:
// ClientHello, the client's Finished, the request head.
const quickAckReads = 4

// QuickAckListener answers clients that leave Nagle's algorithm on (Python's
// and Java's default sockets) without a 40 ms stall on every new
// connection. After the handshake the server has nothing to send, so the
// kernel delays its ACK of the client's Finished, and the client's Nagle
// holds the request back until that ACK comes. Switching TCP_QUICKACK on
// before each of the connection's first reads sends a pending ACK at once
// (Linux resets the flag by itself, so it is set again each time). Later
// reads are plain: a keep-alive connection pays nothing.
func QuickAckListener(ln net.Listener) net.Listener { return quickAckListener{ln} }

type quickAckListener struct{ net.Listener }

func (l quickAckListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return c, nil
	}
	return &quickAckConn{TCPConn: tc, raw: raw}, nil
}

type quickAckConn struct {
	*net.TCPConn
	raw   syscall.RawConn
	reads int
}

func (c *quickAckConn) Read(p []byte) (int, error) {
	if c.reads < quickAckReads {
		c.reads++
		_ = c.raw.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
		})
	}
	return c.TCPConn.Read(p)
}
