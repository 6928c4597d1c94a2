// Floor: N idle WebSocket devices in one Go process on nbio (an epoll poller, no goroutine per socket), JSON ping
// every 15 s, answers WebSocket pings.
package main

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"
)

func main() {
	url := os.Args[1]
	n, _ := strconv.Atoi(os.Args[2])
	hold, _ := time.ParseDuration(os.Args[3])
	var open, msgs int64
	engine := nbhttp.NewEngine(nbhttp.Config{})
	if err := engine.Start(); err != nil {
		panic(err)
	}
	defer engine.Stop()
	u := websocket.NewUpgrader()
	u.OnMessage(func(c *websocket.Conn, mt websocket.MessageType, data []byte) { atomic.AddInt64(&msgs, 1) })
	u.OnClose(func(c *websocket.Conn, err error) { atomic.AddInt64(&open, -1) })
	d := &websocket.Dialer{Engine: engine, Upgrader: u, DialTimeout: 10 * time.Second}
	for i := 0; i < n; i++ {
		c, _, err := d.Dial(fmt.Sprintf("%s/ws/nbiofloor-%d", url, i), http.Header{})
		if err != nil {
			fmt.Println("dial", i, err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		atomic.AddInt64(&open, 1)
		var tick func()
		tick = func() {
			if c.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping","id":1,"t":1}`)) == nil {
				time.AfterFunc(15*time.Second, tick)
			}
		}
		time.AfterFunc(15*time.Second+time.Duration(i%1000)*time.Millisecond, tick)
		if i%200 == 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	fmt.Println("connected", atomic.LoadInt64(&open))
	time.Sleep(hold)
	fmt.Println("open", atomic.LoadInt64(&open), "msgs", atomic.LoadInt64(&msgs))
}
