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
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("wakestorm-engine", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "control address (loopback only)")
	version := fs.Bool("version", false, "print the engine's version and exit")
	caps := fs.Bool("capabilities", false, "print what the engine can run (JSON) and exit")
	profile := fs.Bool("pprof", false, "serve Go's profiles at /debug/pprof/ on the control address")
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
	mux := http.NewServeMux()
	mux.Handle("/", &control{net: newWSNet(10*time.Second, 1<<20+1), clock: newRealClock()})
	if *profile {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
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
