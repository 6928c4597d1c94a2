package main

// The frame trace of a start with "trace": true (`wakestorm try` on the engine): every frame each device sends and
// receives, each socket's open and close, and the device's log lines, sent to k6's side as they happen (every
// traceEvery) beside the records. Text is cut to maxTraceText bytes; audio is counted, not copied.

import (
	"sync"
	"time"
)

// traceEvery is how often a traced session flushes: a person watches `try` print.
const traceEvery = 50 * time.Millisecond

// maxTraceText bounds one traced text frame.
const maxTraceText = 4096

// tracer collects trace events: [t_ms, device, kind, detail…].
type tracer struct {
	mu     sync.Mutex
	clock  Clock
	events [][]any
}

func (t *tracer) add(dev string, kind string, detail ...any) {
	e := append([]any{t.clock.Now(), dev, kind}, detail...)
	t.mu.Lock()
	t.events = append(t.events, e)
	t.mu.Unlock()
}

func (t *tracer) take() [][]any {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.events
	t.events = nil
	return e
}

func cut(b []byte) string {
	if len(b) > maxTraceText {
		return string(b[:maxTraceText])
	}
	return string(b)
}

// traceNet wraps the devices' network: what goes through it is traced.
type traceNet struct {
	inner Net
	t     *tracer
	dev   string
}

type traceSocket struct {
	inner Socket
	t     *tracer
	dev   string
}

type traceEvents struct {
	inner SocketEvents
	t     *tracer
	dev   string
}

// Request is traced as the request's method and URL (its headers and body may hold credentials).
func (n *traceNet) Request(r HTTPRequest, timeoutMs float64, done func(status int, body []byte, err string)) {
	n.t.add(n.dev, "http", r.Method, r.URL)
	n.inner.Request(r, timeoutMs, func(status int, body []byte, err string) {
		n.t.add(n.dev, "http_answer", status, err)
		done(status, body, err)
	})
}

func (n *traceNet) Open(url string, headers map[string]string, h SocketEvents) Socket {
	names := make([]string, 0, len(headers))
	for k := range headers {
		names = append(names, k)
	}
	n.t.add(n.dev, "connect", url, names)
	return &traceSocket{inner: n.inner.Open(url, headers, &traceEvents{inner: h, t: n.t, dev: n.dev}), t: n.t, dev: n.dev}
}

func (s *traceSocket) Send(b []byte) {
	s.t.add(s.dev, "send", cut(b))
	s.inner.Send(b)
}

func (s *traceSocket) SendBinary(b []byte) {
	s.t.add(s.dev, "send_binary", len(b))
	s.inner.SendBinary(b)
}

func (s *traceSocket) Ping() { s.inner.Ping() }

func (s *traceSocket) Subprotocol() string { return s.inner.Subprotocol() }

func (s *traceSocket) Close(code int) {
	s.t.add(s.dev, "close", code)
	s.inner.Close(code)
}

func (e *traceEvents) OnOpen() {
	e.t.add(e.dev, "open")
	e.inner.OnOpen()
}

func (e *traceEvents) OnText(b []byte) {
	e.t.add(e.dev, "recv", cut(b))
	e.inner.OnText(b)
}

func (e *traceEvents) OnBinary(b []byte) {
	e.t.add(e.dev, "recv_binary", len(b))
	e.inner.OnBinary(b)
}

func (e *traceEvents) OnClose(code int) {
	e.t.add(e.dev, "closed", code)
	e.inner.OnClose(code)
}

func (e *traceEvents) OnViolation(kind string) {
	e.t.add(e.dev, "violation", kind)
	e.inner.OnViolation(kind)
}

// takeTrace is the trace since the last call: nil when the start asked for none, else a list (maybe empty).
func (e *Env) takeTrace() [][]any {
	if e.tracer == nil {
		return nil
	}
	if t := e.tracer.take(); t != nil {
		return t
	}
	return [][]any{}
}
