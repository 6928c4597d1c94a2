// Copyright 2020 lesismal. All rights reserved.
// Use of this source code is governed by an MIT-style
// license that can be found in the LICENSE file.

//go:build linux
// +build linux

package nbio

// wakestorm patch (PATCHED.md): reads and writes on the engine's non-blocking sockets return at once, so they are
// made as raw syscalls that keep their P. Through syscall.Read and syscall.Write the runtime's monitor saw the P in a
// syscall (a loopback write runs the peer's TCP receive too, tens of microseconds), took it away and handed it to
// another thread, and kept itself awake in 20 µs sleeps to do so again.

import (
	"syscall"
	"unsafe"
)

//go:norace
func rawRead(fd int, b []byte) (int, error) {
	return rawIO(syscall.SYS_READ, fd, b)
}

//go:norace
func rawWrite(fd int, b []byte) (int, error) {
	return rawIO(syscall.SYS_WRITE, fd, b)
}

//go:norace
func rawIO(trap uintptr, fd int, b []byte) (int, error) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	n, _, e := syscall.RawSyscall(trap, uintptr(fd), uintptr(p), uintptr(len(b)))
	if e != 0 {
		return int(n), e
	}
	return int(n), nil
}

// epollWaitNow collects ready events without waiting.
//
//go:norace
func epollWaitNow(epfd int, events []syscall.EpollEvent) (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])),
		uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return int(n), e
	}
	return int(n), nil
}
