package main

import (
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// loopbackSources is how many source addresses (127.0.0.1 to 127.0.0.16) the engine's connections to a loopback
// server come from. Linux takes a connect()'s port from ip_local_port_range (28,232 ports here) per pair of source and
// destination addresses, scanning the range for a free one, even ports first: from one source, past ~14,000
// connections to one server every connect() scanned thousands of used ports (20,000 devices: connect() was a third of
// the engine's CPU, ~200 µs a call), and past 28,232 there is no port left. Each source has its own range;
// IP_BIND_ADDRESS_NO_PORT leaves the port to connect(), so a bound source does not reserve one port for every
// destination. Devices in the field have addresses of their own too.
const loopbackSources = 16

var nextSource atomic.Uint32

// dialFunc opens a device's TCP connection within timeout, from the next loopback source when the server is on an
// IPv4 loopback address; other destinations (a name, ::1) are dialled as the system chooses.
func dialFunc(timeout time.Duration) func(network, addr string) (net.Conn, error) {
	return func(network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: timeout}
		if host, _, err := net.SplitHostPort(addr); err == nil {
			if ip := net.ParseIP(host).To4(); ip != nil && ip[0] == 127 {
				k := nextSource.Add(1) % loopbackSources
				d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+k))}
				d.Control = bindNoPort
			}
		}
		return d.Dial(network, addr)
	}
}

func bindNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
	}); err != nil {
		return err
	}
	return serr
}
