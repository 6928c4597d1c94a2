package main

// Sockets on nbio (github.com/lesismal/nbio, MIT): one epoll poller reads every socket, so an idle socket
// costs its buffers and state, not a goroutine and its stack (10,000 idle sockets: 4.0 KiB each against 15.1 KiB with
// a goroutine per socket, prototypes/README.md). A socket's events run in order on the poller that reads it; a dial
// runs on a goroutine of its own until TCP connects. Read errors are sorted into what the device must know: the
// server's close code, a lost TCP connection (1006), or a frame the library refused (a violation the server
// committed).

import (
	"bytes"
	"context"
	stdtls "crypto/tls"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/lesismal/llib/std/crypto/tls"
	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/mempool"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"
)

// maxWriteBuffer is what a socket may hold unsent before it is dropped: a server that stops reading, about a minute
// of uplink audio.
const maxWriteBuffer = 1 << 20

type wsNet struct {
	dialer *websocket.Dialer
	// http makes the dialects' provision calls (verified as the start's TLS options say).
	http *http.Client
}

// maxProvisionBody bounds what a provision answer may hold (an OTA answer is a few hundred bytes).
const maxProvisionBody = 64 << 10

// Request makes one HTTP request on a goroutine of its own; done gets the status and body, or why there was none.
func (n *wsNet) Request(r HTTPRequest, timeoutMs float64, done func(status int, body []byte, err string)) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(timeoutMs*float64(time.Millisecond)))
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, r.Method, r.URL, bytes.NewReader(r.Body))
		if err != nil {
			done(0, nil, err.Error())
			return
		}
		for k, v := range r.Headers {
			req.Header.Set(k, v)
		}
		res, err := n.http.Do(req)
		if err != nil {
			done(0, nil, err.Error())
			return
		}
		defer res.Body.Close()
		body, err := io.ReadAll(io.LimitReader(res.Body, maxProvisionBody))
		if err != nil {
			done(0, nil, err.Error())
			return
		}
		done(res.StatusCode, body, "")
	}()
}

// TLSOptions is how a start's wss:// links are verified (startMsg.TLS).
type TLSOptions struct {
	ServerName string `json:"server_name"`
	Insecure   bool   `json:"insecure"`
}

// withTLS is this network with its wss:// dials verified as o says; the poller and buffers are shared.
func (n *wsNet) withTLS(o TLSOptions) *wsNet {
	if o.ServerName == "" && !o.Insecure {
		return n
	}
	d := *n.dialer
	d.TLSClientConfig = &tls.Config{ServerName: o.ServerName, InsecureSkipVerify: o.Insecure} //nolint:gosec // opt-in
	h := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &stdtls.Config{ServerName: o.ServerName, InsecureSkipVerify: o.Insecure}, //nolint:gosec // opt-in
	}}
	return &wsNet{dialer: &d, http: h}
}

// newWSNet starts the poller engine; handshakeTimeout bounds connect and upgrade, readLimit a message's size.
func newWSNet(handshakeTimeout time.Duration, readLimit int) (*wsNet, error) {
	return newWSNetPool(handshakeTimeout, readLimit, nil)
}

// newWSNetPool is newWSNet with the buffers of reads and messages taken from pool (nil: nbio's own). A test gives
// one that poisons every buffer handed back (pool_test.go): nothing the device keeps may point into one.
func newWSNetPool(handshakeTimeout time.Duration, readLimit int, pool mempool.Allocator) (*wsNet, error) {
	engine := nbhttp.NewEngine(nbhttp.Config{
		BodyAllocator:  pool,
		ReadBufferPool: pool,
		Name:           "wakestorm-engine",
		// One poller. Upstream's poller waits in epoll_wait as a blocking syscall, and Go left the waiting
		// goroutine's P (with the timers on it) in the syscall for up to 10 ms: with a poller per core device timers
		// fired late (100 talking devices: timer lag p50/p99 6.8/17.4 ms with two pollers, 2.0/4.7 ms with one).
		// The patched copy parks the poller in Go's netpoller instead (third_party/nbio/PATCHED.md); one poller
		// still reads 10,000 talking devices and keeps a socket's events in order on one goroutine.
		NPoller:            1,
		MaxWriteBufferSize: maxWriteBuffer,
		// Events run on the poller that read them, in order: no goroutine per message. The dial's result is
		// delivered there too, before the socket's first message is parsed.
		ServerExecutor: func(f func()) { f() },
		// A message's buffer goes back to the pool when its handler returns: the device keeps nothing of it (JSON is
		// decoded into copies, audio is only measured). Keeping them made every message read a fresh allocation
		// (third_party/nbio/PATCHED.md: dialed conns ignored this setting until patched).
		ReleaseWebsocketPayload: true,
	})
	if pool != nil {
		// The poller's own read buffer too (nbio reuses one per poller for every read).
		engine.OnReadBufferAlloc(func(*nbio.Conn) *[]byte { return pool.Malloc(engine.ReadBufferSize) })
		engine.OnReadBufferFree(func(_ *nbio.Conn, b *[]byte) { pool.Free(b) })
	}
	// The device checks UTF-8 itself, and counts an invalid text as the server's violation (invalid_utf8).
	engine.CheckUtf8 = func([]byte) bool { return true }
	if err := engine.Start(); err != nil {
		return nil, err
	}
	u := websocket.NewUpgrader()
	u.Engine = engine
	// No read deadline: the device's own liveness rules judge a quiet link.
	u.KeepaliveTime = 0
	u.MessageLengthLimit = readLimit
	u.OnMessage(func(c *websocket.Conn, mt websocket.MessageType, data []byte) {
		s := socketOf(c)
		if s == nil {
			return
		}
		if mt == websocket.TextMessage {
			s.h.OnText(data)
		} else {
			s.h.OnBinary(data)
		}
	})
	u.SetCloseHandler(func(c *websocket.Conn, code int, text string) {
		if s := socketOf(c); s != nil {
			s.mu.Lock()
			s.code = code
			s.mu.Unlock()
		}
		// Answer the close as the protocol asks (RFC 6455 5.5.1), then the library drops the connection.
		if code == closeNoStatus {
			_ = c.WriteMessage(websocket.CloseMessage, nil)
			return
		}
		_ = c.WriteClose(code, "")
	})
	u.OnClose(func(c *websocket.Conn, err error) {
		if s := socketOf(c); s != nil {
			s.ended(err)
		}
	})
	d := &websocket.Dialer{Engine: engine, Upgrader: u, DialTimeout: handshakeTimeout, NetDial: dialFunc(handshakeTimeout)}
	return &wsNet{dialer: d, http: &http.Client{}}, nil
}

type wsSocket struct {
	mu     sync.Mutex
	conn   *websocket.Conn
	h      SocketEvents
	closed bool
	// code is the close code the server sent, 0 until one arrives.
	code int
}

func socketOf(c *websocket.Conn) *wsSocket {
	s, _ := c.Session().(*wsSocket)
	return s
}

func (n *wsNet) Open(url string, headers map[string]string, h SocketEvents) Socket {
	s := &wsSocket{h: h}
	hdr := http.Header{}
	for k, v := range headers {
		hdr.Set(k, v)
	}
	// The dial blocks until TCP connects, so it has a goroutine; the upgrade's answer comes on the poller.
	go func() {
		_, _, _ = n.dialer.DialContext(context.Background(), url, hdr, func(c *websocket.Conn, res *http.Response, err error) {
			if err != nil || c == nil {
				// An upgrade the server refused says its HTTP status (401, 403, 404, 429, 503): the connect fails with
				// it as its code (tagged http_<status>); no answer at all is a lost connection (1006).
				code := closeAbnormal
				if res != nil && res.StatusCode >= 100 && res.StatusCode <= 599 && res.StatusCode != http.StatusSwitchingProtocols {
					code = res.StatusCode
				}
				h.OnClose(code)
				return
			}
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				_ = c.Close()
				return
			}
			s.conn = c
			s.mu.Unlock()
			c.SetSession(s)
			h.OnOpen()
		})
	}()
	return s
}

// ended says how the connection ended: the server's close code, a frame the library refused, or a lost link.
func (s *wsSocket) ended(err error) {
	s.mu.Lock()
	code := s.code
	s.mu.Unlock()
	switch {
	case code != 0:
		s.h.OnClose(code)
	case errors.Is(err, nbio.ErrOverflow):
		// More than maxWriteBuffer queued unsent: the server stopped reading.
		s.h.OnViolation("server_not_reading")
	case errors.Is(err, websocket.ErrMessageTooLarge) || errors.Is(err, nbhttp.ErrTooLong):
		s.h.OnViolation("frame_too_big")
	case isFrameError(err):
		s.h.OnViolation("bad_frame")
	default:
		s.h.OnClose(closeAbnormal)
	}
}

// frameErrors are the library's refusals of a frame the server sent: a reserved opcode or bit, a bad control frame,
// a bad close code, a fragment out of order. (Its parser checks opcodes before the message handler sees them.)
var frameErrors = []error{
	websocket.ErrReserveBitSet,
	websocket.ErrReservedMessageType,
	websocket.ErrControlMessageFragmented,
	websocket.ErrControlMessageTooBig,
	websocket.ErrFragmentsShouldNotHaveBinaryOrTextMessage,
	websocket.ErrInvalidControlFrame,
	websocket.ErrInvalidCloseCode,
	websocket.ErrInvalidFragmentMessage,
	websocket.ErrInvalidCompression,
}

func isFrameError(err error) bool {
	for _, e := range frameErrors {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (s *wsSocket) current() *websocket.Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn
}

func (s *wsSocket) Send(b []byte) { s.write(websocket.TextMessage, b) }

func (s *wsSocket) SendBinary(b []byte) { s.write(websocket.BinaryMessage, b) }

// write queues one message; a write that fails, or a backlog past maxWriteBuffer, drops the connection (a backlog
// is told to the device as a server that stopped reading: ended).
func (s *wsSocket) write(mt websocket.MessageType, b []byte) {
	if c := s.current(); c != nil && c.WriteMessage(mt, b) != nil {
		_ = c.Close()
	}
}

func (s *wsSocket) Ping() { s.write(websocket.PingMessage, nil) }

func (s *wsSocket) Subprotocol() string {
	if c := s.current(); c != nil {
		return c.Subprotocol()
	}
	return ""
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
	_ = c.WriteClose(code, "")
	_ = c.Close()
}
