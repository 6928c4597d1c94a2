// Copyright 2020 lesismal. All rights reserved.
// Use of this source code is governed by an MIT-style
// license that can be found in the LICENSE file.

//go:build linux
// +build linux

package nbio

// wakestorm patch (PATCHED.md): the poller waits for its epoll fd in Go's own netpoller instead of blocking a
// thread in epoll_wait. A blocking epoll_wait holds its P in a syscall: the runtime's monitor takes the P away, hands
// it to another thread and sleeps in short steps while it does, and the poller wakes to a futex handoff to get a P
// back. An epoll fd can itself be polled, so the poller asks the kernel for ready events without waiting, and when
// there are none parks its goroutine on the fd like any socket read.

import (
	"errors"
	"os"
	"syscall"
)

// netpollWaiter returns a wait function with EpollWait's results, or nil when the epoll fd cannot be polled (the
// poller then blocks in epoll_wait as upstream does).
//
//go:norace
func (p *poller) netpollWaiter() func(events []syscall.EpollEvent) (int, error) {
	if err := syscall.SetNonblock(p.epfd, true); err != nil {
		return nil
	}
	f := os.NewFile(uintptr(p.epfd), "nbio-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	p.epfile = f
	return func(events []syscall.EpollEvent) (n int, err error) {
		rerr := rc.Read(func(uintptr) bool {
			for {
				n, err = epollWaitNow(p.epfd, events)
				if !errors.Is(err, syscall.EINTR) {
					return n > 0 || err != nil
				}
			}
		})
		if rerr != nil {
			return 0, rerr
		}
		return n, err
	}
}

// closeEpoll closes the epoll fd, through its os.File when the netpoller holds it.
//
//go:norace
func (p *poller) closeEpoll() {
	if p.epfile != nil {
		_ = p.epfile.Close()
		return
	}
	_ = syscall.Close(p.epfd)
}
