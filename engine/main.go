// Command wakestorm-engine is wakestorm's native device engine: it holds the devices' WebSockets and runs their hot
// path (handshake, keepalive, liveness, backoff) in one process, driven by k6 over a local control socket
// (docs/engine.md). It listens on loopback only.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"time"

	nblog "github.com/lesismal/nbio/logging"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 && args[0] == "replay" {
		// Conformance traces on stdin, one a line; their events on stdout (replay.go). No network.
		if err := replayLines(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "wakestorm-engine replay: %v\n", err)
			return 1
		}
		return 0
	}
	fs := flag.NewFlagSet("wakestorm-engine", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "control address (loopback only)")
	version := fs.Bool("version", false, "print the engine's version and exit")
	caps := fs.Bool("capabilities", false, "print what the engine can run (JSON) and exit")
	profile := fs.Bool("pprof", false, "serve Go's profiles at /debug/pprof/ on the control address")
	cpuProfile := fs.String("cpu-profile", "", "write a CPU profile of the engine's whole life to this file")
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err == flag.ErrHelp {
		fs.SetOutput(os.Stdout)
		fs.PrintDefaults()
		return 0
	} else if err != nil {
		fmt.Fprintf(os.Stderr, "wakestorm-engine: %v (see --help)\n", err)
		return 2
	}
	if *version {
		fmt.Println("wakestorm-engine", engineVersion)
		return 0
	}
	if *caps {
		b, _ := json.Marshal(capabilities)
		fmt.Println(string(b))
		return 0
	}
	host, _, err := net.SplitHostPort(*listen)
	ip := net.ParseIP(host)
	if err != nil || ip == nil || !ip.IsLoopback() {
		fmt.Fprintf(os.Stderr, "wakestorm-engine: --listen must be a loopback address with a port (127.0.0.1:0), got %q\n", *listen)
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "wakestorm-engine: cannot listen on %s: %v\n", *listen, err)
		return 2
	}
	// Idle devices allocate little and hold much: a tighter GC target costs no measurable CPU and a tenth of the
	// RSS (10,000 idle devices: 145 MB at GOGC 100, 108 MB at 25, CPU the same). GOGC in the environment wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(25)
	}
	// Ahead of the server and Toxiproxy on a shared box, when it may (priority_linux.go); before the poller starts, so
	// every thread it starts inherits the priority. Without the privilege it runs as it is (docs/engine.md).
	raisePriority()
	// The socket library speaks only of its own failures, and to stderr (stdout carries the listening line).
	nblog.Output = os.Stderr
	nblog.SetLevel(nblog.LevelError)
	sockets, err := newWSNet(10*time.Second, 1<<20+1)
	if err != nil {
		fmt.Fprintf(os.Stderr, "wakestorm-engine: cannot start the socket poller: %v\n", err)
		return 1
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "wakestorm-engine: cannot write the CPU profile %s: %v\n", *cpuProfile, err)
			return 2
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}
	mux := http.NewServeMux()
	mux.Handle("/", &control{net: sockets, clock: newRealClock()})
	if *profile {
		mux.HandleFunc("/debug/pprof/", httppprof.Index)
		mux.HandleFunc("/debug/pprof/profile", httppprof.Profile)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("wakestorm-engine listening ws://%s/control\n", ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		fmt.Fprintf(os.Stderr, "wakestorm-engine: %v\n", err)
		return 1
	}
	return 0
}

// engineVersion changes when the control protocol does.
const engineVersion = "0.1.0"
