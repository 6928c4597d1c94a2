package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Devices reach a loopback server from several source addresses, each connect with its own port range.
func TestLoopbackSources(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		mu.Lock()
		seen[host]++
		mu.Unlock()
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		_ = c.WriteMessage(websocket.TextMessage, []byte("hi"))
		time.Sleep(10 * time.Millisecond)
		_ = c.Close()
	}))
	t.Cleanup(srv.Close)
	n, err := newWSNet(5*time.Second, 1024)
	if err != nil {
		t.Fatal(err)
	}
	url := "ws" + strings.TrimPrefix(srv.URL, "http")
	for i := 0; i < 2*loopbackSources; i++ {
		ends(t, n, url)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != loopbackSources {
		t.Fatalf("connections came from %d source addresses, want %d: %v", len(seen), loopbackSources, seen)
	}
	for host, k := range seen {
		if ip := net.ParseIP(host).To4(); ip == nil || ip[0] != 127 || k != 2 {
			t.Fatalf("%s: %d connections, want 2 from a 127/8 address each: %v", host, k, seen)
		}
	}
}
