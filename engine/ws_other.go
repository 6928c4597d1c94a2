//go:build !linux

package main

import (
	"net"
	"time"
)

// dialFunc dials as the system chooses: elsewhere than Linux, loopback addresses past 127.0.0.1 are not configured by
// default (ws_linux.go spreads them).
func dialFunc(timeout time.Duration) func(network, addr string) (net.Conn, error) {
	return func(network, addr string) (net.Conn, error) {
		return net.DialTimeout(network, addr, timeout)
	}
}
