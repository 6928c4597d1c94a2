//go:build linux

package main

// The engine asks the scheduler to run it ahead of the processes it shares the machine with, when it may. On one box
// the server, Toxiproxy and k6 compete with it for the cores; a device timer that waits for a core adds its wait to
// the latency the device measures. Four fidelity steps at 10,000 talking devices each way (bench/LIMITS.md): the
// engine's timer lag p99 18-27 ms at nice -5 against 26-61 ms at nice 0, the wake-ack p99 error 9-18 ms against
// 22-39 ms. With the generator ahead, more of what is left is the server's delay, which is what is measured.

import (
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// enginePriority is the nice value the engine asks for: ahead of a default process, well short of real-time.
const enginePriority = -5

// raisePriority sets every thread of the engine to enginePriority (Linux keeps a nice value per thread; threads
// started later inherit their creator's). It reports false when it may not (no CAP_SYS_NICE): the engine then runs
// at its inherited priority.
func raisePriority() bool {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return false
	}
	ok := true
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if unix.Setpriority(unix.PRIO_PROCESS, tid, enginePriority) != nil {
			ok = false
		}
	}
	return ok
}
