package main

// The real sockets (ws.go) against a real loopback WebSocket server: how a link's end reaches the device.

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

type wsEvents struct{ got chan string }

func (e wsEvents) OnOpen()           { e.got <- "open" }
func (e wsEvents) OnText(b []byte)   { e.got <- "text:" + string(b) }
func (e wsEvents) OnBinary(b []byte) { e.got <- "binary" }
func (e wsEvents) OnClose(code int)  { e.got <- "close:" + strconv.Itoa(code) }
func (e wsEvents) OnViolation(k string) {
	e.got <- "violation:" + k
}

// serve answers each connection by sending "hi", then what send does to the raw connection.
func serve(t *testing.T, send func(c *websocket.Conn)) string {
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		_ = c.WriteMessage(websocket.TextMessage, []byte("hi"))
		send(c)
		time.Sleep(200 * time.Millisecond)
		_ = c.Close()
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}

func ends(t *testing.T, n *wsNet, url string) []string {
	e := wsEvents{got: make(chan string, 16)}
	n.Open(url+"/ws/d1", nil, e)
	var seen []string
	for {
		select {
		case s := <-e.got:
			seen = append(seen, s)
			if strings.HasPrefix(s, "close:") || strings.HasPrefix(s, "violation:") {
				return seen
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no end after %v", seen)
		}
	}
}

// raw writes one frame's bytes straight to the TCP connection.
func raw(b ...byte) func(c *websocket.Conn) {
	return func(c *websocket.Conn) { _, _ = c.NetConn().Write(b) }
}

func TestSocketEnds(t *testing.T) {
	n, err := newWSNet(5*time.Second, 1024)
	if err != nil {
		t.Fatal(err)
	}
	closeWith := func(code int) func(c *websocket.Conn) {
		return func(c *websocket.Conn) {
			_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
		}
	}
	cases := []struct {
		name string
		send func(c *websocket.Conn)
		want string
	}{
		// 1012-1014 are IANA-registered; upstream nbio refused them (engine/third_party/nbio/PATCHED.md).
		{"restart 1012", closeWith(1012), "close:1012"},
		{"try again later 1013", closeWith(1013), "close:1013"},
		{"normal 1000", closeWith(1000), "close:1000"},
		{"application 4001", closeWith(4001), "close:4001"},
		{"a code no one may send (1004)", closeWith(1004), "violation:bad_frame"},
		{"a frame past the read limit", func(c *websocket.Conn) {
			_ = c.WriteMessage(websocket.BinaryMessage, make([]byte, 4096))
		}, "violation:frame_too_big"},
		// Frames written raw past the library: an unmasked server frame with a reserved opcode, a reserved bit, a
		// fragmented ping, a continuation with nothing to continue.
		{"reserved opcode 0x3", raw(0x83, 0), "violation:bad_frame"},
		{"reserved bit RSV2", raw(0xA1, 1, 'x'), "violation:bad_frame"},
		{"fragmented ping", raw(0x09, 0), "violation:bad_frame"},
		{"stray continuation", raw(0x80, 1, 'x'), "violation:bad_frame"},
		{"TCP closed without a close frame", func(c *websocket.Conn) { _ = c.NetConn().Close() }, "close:1006"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			seen := ends(t, n, serve(t, tc.send))
			if len(seen) < 3 || seen[0] != "open" || seen[1] != "text:hi" || seen[len(seen)-1] != tc.want {
				t.Fatalf("got %v, want open, text:hi, …, %s", seen, tc.want)
			}
		})
	}
}

// A server that stops reading: the uplink piles up past maxWriteBuffer and the device hears server_not_reading.
func TestServerThatStopsReading(t *testing.T) {
	n, err := newWSNet(5*time.Second, 1024)
	if err != nil {
		t.Fatal(err)
	}
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	url := serve(t, func(c *websocket.Conn) { <-hold }) // reads nothing until the test ends
	e := wsEvents{got: make(chan string, 64)}
	s := n.Open(url+"/ws/d1", nil, e)
	chunk := make([]byte, 64<<10)
	deadline := time.After(10 * time.Second)
	for opened := false; ; {
		select {
		case got := <-e.got:
			if got == "open" {
				opened = true
			}
			if strings.HasPrefix(got, "violation:") || strings.HasPrefix(got, "close:") {
				if got != "violation:server_not_reading" {
					t.Fatalf("the socket ended with %s", got)
				}
				return
			}
		case <-deadline:
			t.Fatal("no end in 10 s of writing to a server that reads nothing")
		default:
			if opened {
				s.SendBinary(chunk)
			} else {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
}

// TestRefusedUpgradeSaysItsStatus: an upgrade the server answers with 401, 403, 429 or 503 ends the attempt with that
// status as its code (the device tags the failed connect http_<status>); a server that is not there, 1006.
func TestRefusedUpgradeSaysItsStatus(t *testing.T) {
	n, err := newWSNet(5*time.Second, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for _, status := range []int{401, 403, 429, 503} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, http.StatusText(status), status)
		}))
		got := ends(t, n, "ws"+strings.TrimPrefix(srv.URL, "http"))
		srv.Close()
		if want := "close:" + strconv.Itoa(status); got[len(got)-1] != want {
			t.Fatalf("HTTP %d: the attempt ended %v, want %s", status, got, want)
		}
	}
	srv := httptest.NewServer(http.NotFoundHandler())
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	srv.Close()
	if got := ends(t, n, url); got[len(got)-1] != "close:1006" {
		t.Fatalf("no server: the attempt ended %v, want close:1006", got)
	}
}
