// Copyright 2020 lesismal. All rights reserved.
// Use of this source code is governed by an MIT-style
// license that can be found in the LICENSE file.

//go:build darwin || netbsd || freebsd || openbsd || dragonfly
// +build darwin netbsd freebsd openbsd dragonfly

package nbio

import "syscall"

// wakestorm patch (PATCHED.md): raw socket reads and writes are the Linux engine's; elsewhere the upstream calls.

//go:norace
func rawRead(fd int, b []byte) (int, error) { return syscall.Read(fd, b) }

//go:norace
func rawWrite(fd int, b []byte) (int, error) { return syscall.Write(fd, b) }
