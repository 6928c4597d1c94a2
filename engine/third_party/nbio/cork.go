//go:build linux || darwin || netbsd || freebsd || openbsd || dragonfly
// +build linux darwin netbsd freebsd openbsd dragonfly

package nbio

import (
	"errors"
	"syscall"
)

// Corking (wakestorm patch). While the poller hands a conn what it read, whatever is written to that conn (a pong
// answering a ping, a JSON answer to a JSON request, from the handler or from another goroutine) waits in one buffer
// and goes out in a single write when the handler returns: a server's WebSocket ping and JSON ping read together are
// answered in one system call, not two. Only the conn being handled is corked, so one buffer per poller holds it. The
// epoll poller corks (poller_epoll.go); kqueue's does not.

// cork starts holding c's writes in buf.
//
//go:norace
func (c *Conn) cork(buf *[]byte) {
	c.mux.Lock()
	if !c.closed {
		c.corked = buf
	}
	c.mux.Unlock()
}

// uncork writes what was held, as Write would have.
//
//go:norace
func (c *Conn) uncork() {
	c.mux.Lock()
	if c.corked == nil {
		c.mux.Unlock()
		return
	}
	buf := c.corked
	c.corked = nil
	if c.closed || len(*buf) == 0 {
		*buf = (*buf)[:0]
		c.mux.Unlock()
		return
	}
	n, err := c.write(*buf)
	*buf = (*buf)[:0]
	_, _ = c.endWrite(n, err)
}

// corkWrite holds b, within the conn's write buffer bound. c.mux is held.
//
//go:norace
func (c *Conn) corkWrite(b []byte) (int, error) {
	if c.overflow(len(*c.corked) + len(b)) {
		return -1, errOverflow
	}
	*c.corked = append(*c.corked, b...)
	return len(b), nil
}

// flushCork writes what was held before the conn closes (best effort). c.mux is held.
//
//go:norace
func (c *Conn) flushCork() {
	if c.corked == nil {
		return
	}
	buf := c.corked
	c.corked = nil
	if len(*buf) > 0 {
		_, _ = c.write(*buf)
	}
	*buf = (*buf)[:0]
}

// isRetry is a write error that leaves the conn open (the rest is written when the socket can take it).
func isRetry(err error) bool {
	return errors.Is(err, syscall.EINTR) || errors.Is(err, syscall.EAGAIN)
}

// endWrite ends a write made under c.mux, and unlocks it: an error other than a retry closes the conn; otherwise the
// writing event is armed for what is left, or the write deadline cleared when nothing is (Write, Writev, uncork).
//
//go:norace
func (c *Conn) endWrite(n int, err error) (int, error) {
	if err != nil && !isRetry(err) {
		c.closed = true
		c.mux.Unlock()
		_ = c.closeWithErrorWithoutLock(err)
		return n, err
	}
	if len(c.writeList) == 0 {
		// no data left to be written, clear write deadline timer.
		if c.wTimer != nil {
			c.wTimer.Stop()
			c.wTimer = nil
		}
	} else {
		// has data left to be written, set writing event.
		c.modWrite()
	}
	c.mux.Unlock()
	return n, err
}
