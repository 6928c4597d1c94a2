package main

// Nothing the device keeps points into a buffer the socket library handed back (issue 41): devices on real loopback
// sockets, every read and message buffer taken from a pool that overwrites what it is given back, against a server
// that sends quickly so the buffers are reused at once. Whatever a record, a capture or a log kept of a returned
// buffer reads as poison, or as another message's bytes. Run it under -race as well: `go test -race -run Poison`.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// poisonPool hands out fresh buffers and overwrites each one it is given back before keeping it for the next
// Malloc, so that a stale reference sees poison first and then another read's bytes.
type poisonPool struct {
	mu    sync.Mutex
	free  [][]byte
	freed int
}

const poison = 0xEE

func (p *poisonPool) Malloc(size int) *[]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, b := range p.free {
		if cap(b) >= size {
			p.free = append(p.free[:i], p.free[i+1:]...)
			b = b[:size]
			return &b
		}
	}
	b := make([]byte, size)
	return &b
}

func (p *poisonPool) Realloc(buf *[]byte, size int) *[]byte {
	if cap(*buf) >= size {
		*buf = (*buf)[:size]
		return buf
	}
	nb := p.Malloc(size)
	copy(*nb, *buf)
	p.Free(buf)
	return nb
}

func (p *poisonPool) Append(buf *[]byte, more ...byte) *[]byte {
	n := len(*buf)
	nb := p.Realloc(buf, n+len(more))
	copy((*nb)[n:], more)
	return nb
}

func (p *poisonPool) AppendString(buf *[]byte, more string) *[]byte {
	return p.Append(buf, []byte(more)...)
}

func (p *poisonPool) Free(buf *[]byte) {
	b := (*buf)[:cap(*buf)]
	for i := range b {
		b[i] = poison
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.freed++
	// A short free list: a returned buffer is handed out again within a few reads.
	if len(p.free) < 4 {
		p.free = append(p.free, b)
	}
}

// poolServer: the wakestorm protocol, quickly. Each device gets its ready message, then on its wake a
// session_started, and a burst of messages the dialect does not speak (each its own text) between binary frames
// that refill the buffers; it records the session id each end_of_speech echoes.
type poolServer struct {
	url      string
	mu       sync.Mutex
	echoed   map[string]string // device id → the session_id its end_of_speech carried
	audioBad int               // uplink frames that were not the utterance's bytes
}

const burst = 60

func unmatchedText(dev string, i int) string {
	return fmt.Sprintf(`{"type":"mystery","dev":%q,"seq":%d,"pad":%q}`, dev, i, strings.Repeat(dev, 8))
}

func startPoolServer(t *testing.T, frame []byte) *poolServer {
	ps := &poolServer{echoed: map[string]string{}}
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		dev := strings.TrimPrefix(r.URL.Path, "/ws/")
		var wmu sync.Mutex
		send := func(mt int, b []byte) {
			wmu.Lock()
			defer wmu.Unlock()
			_ = c.WriteMessage(mt, b)
		}
		send(websocket.TextMessage, []byte(`{"type":"connected","resume_token":"r-`+dev+`-token","resumed":false}`))
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			mt, b, err := c.ReadMessage()
			if err != nil {
				return
			}
			if mt == websocket.BinaryMessage {
				if !bytes.Equal(b, frame) {
					ps.mu.Lock()
					ps.audioBad++
					ps.mu.Unlock()
				}
				continue
			}
			var m map[string]any
			if json.Unmarshal(b, &m) != nil {
				continue
			}
			switch m["type"] {
			case "hotword_detected":
				sid := "s-" + dev + "-" + strings.Repeat("z", 40)
				send(websocket.TextMessage, []byte(fmt.Sprintf(`{"type":"session_started","wake_id":%q,"session_id":%q}`,
					m["wake_id"], sid)))
				go func() {
					junk := bytes.Repeat([]byte{0x5A}, 900)
					for i := 0; i < burst; i++ {
						send(websocket.TextMessage, []byte(unmatchedText(dev, i)))
						send(websocket.BinaryMessage, junk)
					}
				}()
			case "end_of_speech":
				ps.mu.Lock()
				ps.echoed[dev], _ = m["session_id"].(string)
				ps.mu.Unlock()
			}
		}
	}))
	t.Cleanup(srv.Close)
	ps.url = "ws" + strings.TrimPrefix(srv.URL, "http")
	return ps
}

func TestNothingKeptOfAPoisonedBuffer(t *testing.T) {
	pool := &poisonPool{}
	n, err := newWSNetPool(5*time.Second, 1<<20+1, pool)
	if err != nil {
		t.Fatal(err)
	}
	frame := bytes.Repeat([]byte{1, 2, 3, 4}, 160)
	u := &Uplink{Silence: make([]byte, 640), FrameMs: 20, LastVoiced: 4}
	for i := 0; i < 5; i++ {
		u.Frames = append(u.Frames, frame)
		u.Silent = append(u.Silent, false)
	}
	srv := startPoolServer(t, frame)
	sink := &memSink{}
	env := &Env{Clock: newRealClock(), Net: n, Sink: sink, Token: "tok", Intake: intake, Timing: timing, Rules: rules(),
		ConnectTimeoutMs: 5000}
	p := talker()
	p.Keepalive.Send = "none"
	const devices = 8
	var ds []*Device
	for i := 0; i < devices; i++ {
		id := fmt.Sprintf("d%02d", i)
		ds = append(ds, NewDevice(id, srv.url, p, shippedDialect(t, "wakestorm"), env, "seed",
			WakeSchedule{Mode: "once", FirstMinMs: 20, FirstMaxMs: 60}, u,
			map[string]any{"device_id": id, "profile": p.Name, "protocol_version": 1.0}))
	}
	for _, d := range ds {
		d.Start(0)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		srv.mu.Lock()
		echoed := len(srv.echoed)
		srv.mu.Unlock()
		sink.mu.Lock()
		unmatched := len(sink.named("unmatched_messages"))
		sink.mu.Unlock()
		if echoed == devices && unmatched == devices*burst {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 s: %d of %d end_of_speech, %d of %d unmatched messages", echoed, devices, unmatched,
				devices*burst)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, d := range ds {
		d.Stop()
	}
	pool.mu.Lock()
	freed := pool.freed
	pool.mu.Unlock()
	if freed < devices*burst {
		t.Fatalf("the pool got back %d buffers: the socket library did not use it", freed)
	}
	// Every unmatched record holds exactly one message the server sent, read after every buffer went back.
	sent := map[string]bool{}
	for i := 0; i < devices; i++ {
		for j := 0; j < burst; j++ {
			sent[unmatchedText(fmt.Sprintf("d%02d", i), j)] = true
		}
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	for _, r := range sink.named("unmatched_messages") {
		if !sent[string(r.Raw)] {
			t.Fatalf("an unmatched record holds bytes the server never sent as one message: %q", r.Raw)
		}
		delete(sent, string(r.Raw))
	}
	// What the device captured and said back: its session id and resume token, whole.
	for _, d := range ds {
		want := "s-" + d.id + "-" + strings.Repeat("z", 40)
		if got := srv.echoed[d.id]; got != want {
			t.Fatalf("%s said end_of_speech for session %q, want %q", d.id, got, want)
		}
		d.mu.Lock()
		tok := d.vars.Get("resume_token")
		d.mu.Unlock()
		if tok != "r-"+d.id+"-token" {
			t.Fatalf("%s holds resume token %v", d.id, tok)
		}
	}
	if srv.audioBad > 0 {
		t.Fatalf("%d uplink frames reached the server with other bytes", srv.audioBad)
	}
}
