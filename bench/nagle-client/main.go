// Command nagle-client measures the first answer on new TLS connections
// from a client that leaves Nagle's algorithm on, as Python's and Java's
// default sockets do: n sequential connections, one GET each, and the
// minimum, median and maximum time to the answer.
//
//	go run ./bench/nagle-client -n 20 127.0.0.1:8443
package main

import (
	"bufio"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"time"
)

func main() {
	n := flag.Int("n", 20, "connections")
	host := flag.String("host", "localhost", "SNI and Host")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: nagle-client [-n 20] [-host localhost] HOST:PORT")
		os.Exit(2)
	}
	addr := flag.Arg(0)
	times := make([]time.Duration, 0, *n)
	for range *n {
		d, err := firstAnswer(addr, *host)
		if err != nil {
			fmt.Fprintln(os.Stderr, "nagle-client:", err)
			os.Exit(1)
		}
		times = append(times, d)
	}
	slices.Sort(times)
	fmt.Printf("%d connections: min %s, median %s, max %s\n", len(times), times[0], times[len(times)/2], times[len(times)-1])
}

func firstAnswer(addr, host string) (time.Duration, error) {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if err := c.(*net.TCPConn).SetNoDelay(false); err != nil {
		return 0, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	// The certificate is not checked: the subject is timing, not trust.
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, ServerName: host, NextProtos: []string{"http/1.1"}})
	if _, err := fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return time.Since(start), nil
}
