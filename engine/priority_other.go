//go:build !linux

package main

// raisePriority is Linux's (priority_linux.go); elsewhere the engine runs at its inherited priority.
func raisePriority() bool { return false }
