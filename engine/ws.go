package main

// Sockets on gorilla/websocket: one goroutine per socket (it dials, then reads), small buffers, the write buffer only
// while a message is being written. Read errors are sorted into what the device must know: the server's close code,
// a lost TCP connection (1006), or a frame the library refused (a violation the server committed).

import (
	"errors"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

const writeWait = 5 * time.Second

type wsNet struct {
	dialer    *websocket.Dialer
	readLimit int64
}

func newWSNet(handshakeTimeout time.Duration, readLimit int) *wsNet {
	return &wsNet{
		dialer: &websocket.Dialer{
			ReadBufferSize:   512,
			WriteBufferSize:  512,
			WriteBufferPool:  &sync.Pool{},
			HandshakeTimeout: handshakeTimeout,
		},
		readLimit: int64(readLimit),
	}
}

type wsSocket struct {
	mu     sync.Mutex
	conn   *websocket.Conn
	closed bool
}

func (n *wsNet) Open(url string, headers map[string]string, h SocketEvents) Socket {
	s := &wsSocket{}
	hdr := http.Header{}
	for k, v := range headers {
		hdr.Set(k, v)
	}
	go func() {
		conn, resp, err := n.dialer.Dial(url, hdr)
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		if err != nil {
			h.OnClose(closeAbnormal)
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = conn.Close()
			return
		}
		s.conn = conn
		s.mu.Unlock()
		conn.SetReadLimit(n.readLimit)
		h.OnOpen()
		// The reader runs in a goroutine of its own: the dial's deep call path grew this goroutine's stack to 8 KiB,
		// a fresh one blocked in a read needs a quarter of that (10,000 sockets: 83 MB of stacks before).
		go readLoop(conn, h)
	}()
	return s
}

// readLoop reads until the connection ends and says how it ended. A message is handled by the socket's worker, not
// here: a reader that only reads keeps a small stack (handling a message, JSON and all, grew each reader's stack to
// 8 KiB), and one worker per shard keeps each socket's messages in order.
func readLoop(conn *websocket.Conn, h SocketEvents) {
	shard := workers.pick()
	for {
		mt, data, err := conn.ReadMessage()
		if err == nil {
			if mt == websocket.TextMessage {
				shard.do(func() { h.OnText(data) })
			} else {
				shard.do(func() { h.OnBinary(data) })
			}
			continue
		}
		_ = conn.Close()
		var ce *websocket.CloseError
		switch {
		case errors.As(err, &ce):
			shard.do(func() { h.OnClose(ce.Code) })
		case errors.Is(err, websocket.ErrReadLimit):
			shard.do(func() { h.OnViolation("frame_too_big") })
		case strings.HasPrefix(err.Error(), "websocket: "):
			// The library's own protocol errors (a reserved opcode or bit, a bad control frame).
			shard.do(func() { h.OnViolation("bad_frame") })
		default:
			shard.do(func() { h.OnClose(closeAbnormal) })
		}
		return
	}
}

func (s *wsSocket) Send(b []byte) { s.write(websocket.TextMessage, b) }

func (s *wsSocket) SendBinary(b []byte) { s.write(websocket.BinaryMessage, b) }

// write sends one message; a write that fails or stalls past writeWait drops the connection (the reader reports it).
func (s *wsSocket) write(messageType int, b []byte) {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return
	}
	_ = c.SetWriteDeadline(time.Now().Add(writeWait))
	if c.WriteMessage(messageType, b) != nil {
		_ = c.Close()
	}
}

func (s *wsSocket) Ping() {
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c != nil && c.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait)) != nil {
		_ = c.Close()
	}
}

// Close sends a close frame with code (1000 when 0) and drops the connection; a socket still dialing is closed when
// its dial ends.
func (s *wsSocket) Close(code int) {
	s.mu.Lock()
	c := s.conn
	s.closed = true
	s.mu.Unlock()
	if c == nil {
		return
	}
	if code == 0 {
		code = closeNormal
	}
	go func() {
		_ = c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), time.Now().Add(time.Second))
		_ = c.Close()
	}()
}

// workerPool runs socket events on a few long-lived goroutines; a socket keeps one worker for its life.
type workerPool struct {
	queues []chan func()
	next   atomic.Uint32
}

func newWorkerPool(n int) *workerPool {
	p := &workerPool{queues: make([]chan func(), n)}
	for i := range p.queues {
		q := make(chan func(), 4096)
		p.queues[i] = q
		go func() {
			for fn := range q {
				fn()
			}
		}()
	}
	return p
}

type worker chan func()

func (p *workerPool) pick() worker {
	return p.queues[int(p.next.Add(1))%len(p.queues)]
}

// do queues fn; a full queue blocks the reader (back-pressure: the socket is read no faster than it is handled).
func (w worker) do(fn func()) { w <- fn }

var workers = newWorkerPool(4 * runtime.GOMAXPROCS(0))
