package main

// The engine's CPU per uplink audio frame, for `npm run bench` (bench/frame-cost-run.ts): the same measure as the k6
// device's (bench/k6/frame-cost.ts): paced 20 ms streams with sockets in memory, CPU over a window, against bare
// timers at the same pace in the same process. Skipped unless WAKESTORM_FRAME_COST names the number of streams.

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// answeringNet holds sockets in memory: each opens, hears the ready, and has its wakes acknowledged at once; uplink
// frames are only counted.
type answeringNet struct {
	noHTTP
	frames atomic.Int64
}

type answeringSocket struct {
	n *answeringNet
	h SocketEvents
}

func (n *answeringNet) Open(_ string, _ map[string]string, h SocketEvents) Socket {
	go func() {
		h.OnOpen()
		h.OnText([]byte(`{"type":"connected","resume_token":"r","resumed":false}`))
	}()
	return &answeringSocket{n: n, h: h}
}

func (s *answeringSocket) Send(b []byte) {
	if !strings.Contains(string(b), "hotword_detected") {
		return
	}
	var m struct {
		WakeID string `json:"wake_id"`
	}
	_ = json.Unmarshal(b, &m)
	go s.h.OnText([]byte(`{"type":"session_started","session_id":"s","wake_id":"` + m.WakeID + `"}`))
}
func (s *answeringSocket) SendBinary([]byte)   { s.n.frames.Add(1) }
func (s *answeringSocket) Ping()               {}
func (s *answeringSocket) Subprotocol() string { return "" }
func (s *answeringSocket) Close(int)           {}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

type nullSink struct{}

func (nullSink) Add(Record) {}

func TestFrameCost(t *testing.T) {
	streams, _ := strconv.Atoi(os.Getenv("WAKESTORM_FRAME_COST"))
	if streams <= 0 {
		t.Skip("WAKESTORM_FRAME_COST not set (npm run bench sets it)")
	}
	const window = 4 * time.Second
	// Bare timers: a chain of 20 ms timers per stream, the least any paced frame costs.
	var ticks atomic.Int64
	stop := make(chan struct{})
	for i := 0; i < streams; i++ {
		var tick func()
		tick = func() {
			select {
			case <-stop:
				return
			default:
			}
			ticks.Add(1)
			time.AfterFunc(20*time.Millisecond, tick)
		}
		time.AfterFunc(time.Duration(i%20)*time.Millisecond, tick)
	}
	time.Sleep(time.Second)
	c0, n0 := cpuSeconds(), ticks.Load()
	time.Sleep(window)
	timers := ticks.Load() - n0
	usPerTimer := (cpuSeconds() - c0) * 1e6 / float64(timers)
	close(stop)
	time.Sleep(100 * time.Millisecond)

	// The device model: talking devices that stream a 12 s utterance at real-time pace, all voiced.
	u := &Uplink{Silence: make([]byte, 640), FrameMs: 20}
	for i := 0; i < 600; i++ {
		u.Frames = append(u.Frames, make([]byte, 640))
		u.Silent = append(u.Silent, false)
	}
	u.LastVoiced = 599
	net := &answeringNet{}
	env := &Env{Clock: newRealClock(), Net: net, Sink: nullSink{}, Intake: intake, Timing: timing, Rules: rules()}
	d := shippedDialect(t, "wakestorm")
	var devices []*Device
	for i := 0; i < streams; i++ {
		id := fmt.Sprintf("dev-%d", i)
		p := talker()
		dev := NewDevice(id, "ws://127.0.0.1:1", p, d, env, "seed", WakeSchedule{Mode: "once", FirstMinMs: 0, FirstMaxMs: 1000},
			u, map[string]any{"device_id": id, "profile": p.Name, "protocol_version": 1.0})
		devices = append(devices, dev)
		dev.Start(0)
	}
	time.Sleep(2 * time.Second)
	c0, f0 := cpuSeconds(), net.frames.Load()
	time.Sleep(window)
	frames := net.frames.Load() - f0
	usPerFrame := (cpuSeconds() - c0) * 1e6 / float64(frames)
	stopAll(devices)
	if frames < int64(float64(streams)*window.Seconds()*50*0.9) {
		t.Fatalf("%d frames in %v from %d streams: the devices did not stream at pace", frames, window, streams)
	}
	out, _ := json.Marshal(map[string]any{
		"streams": streams, "timers_per_s": float64(timers) / window.Seconds(), "frames_per_s": float64(frames) / window.Seconds(),
		"us_per_timer": usPerTimer, "us_per_frame": usPerFrame,
	})
	fmt.Printf("ENGINE_FRAME_COST %s\n", out)
}
