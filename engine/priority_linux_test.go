//go:build linux

package main

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// threadNices reads each thread's nice value from /proc (field 19 of its stat).
func threadNices(t *testing.T) map[string]int {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	nices := map[string]int{}
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/stat")
		if err != nil {
			continue // the thread ended
		}
		fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		n, err := strconv.Atoi(fields[16])
		if err != nil {
			t.Fatalf("stat of %s: %v", task.Name(), err)
		}
		nices[task.Name()] = n
	}
	return nices
}

func TestRaisePriorityCoversLaterThreads(t *testing.T) {
	if !raisePriority() {
		t.Skip("no CAP_SYS_NICE here: the engine runs at its inherited priority")
	}
	// Threads the runtime starts after the call inherit it: force a few new ones.
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			<-release
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(threadNices(t)) < 5 && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	nices := threadNices(t)
	close(release)
	wg.Wait()
	for tid, n := range nices {
		if n != enginePriority {
			t.Errorf("thread %s runs at nice %d, want %d (of %d threads)", tid, n, enginePriority, len(nices))
		}
	}
}
