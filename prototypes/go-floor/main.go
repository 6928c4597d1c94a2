// Floor: N idle WebSocket devices in one Go process (gorilla/websocket), JSON ping every 15 s, answers WebSocket pings.
package main

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

func main() {
	url := os.Args[1]
	n, _ := strconv.Atoi(os.Args[2])
	hold, _ := time.ParseDuration(os.Args[3])
	var open, msgs int64
	d := websocket.Dialer{ReadBufferSize: 512, WriteBufferSize: 512, HandshakeTimeout: 10 * time.Second}
	for i := 0; i < n; i++ {
		c, _, err := d.Dial(fmt.Sprintf("%s/ws/gofloor-%d", url, i), http.Header{})
		if err != nil {
			fmt.Println("dial", i, err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		atomic.AddInt64(&open, 1)
		go func(c *websocket.Conn, i int) {
			t := time.NewTicker(15*time.Second + time.Duration(i%1000)*time.Millisecond)
			defer t.Stop()
			go func() {
				for range t.C {
					c.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping","id":1,"t":1}`))
				}
			}()
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					atomic.AddInt64(&open, -1)
					return
				}
				atomic.AddInt64(&msgs, 1)
			}
		}(c, i)
		if i%200 == 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	fmt.Println("connected", atomic.LoadInt64(&open))
	time.Sleep(hold)
	fmt.Println("open", atomic.LoadInt64(&open), "msgs", atomic.LoadInt64(&msgs))
}
