//go:build !linux

package tls

import "net"

// QuickAckListener returns ln unchanged: TCP_QUICKACK is Linux's.
func QuickAckListener(ln net.Listener) net.Listener { return ln }
