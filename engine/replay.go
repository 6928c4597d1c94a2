package main

// The trace replay (`wakestorm-engine replay`): one device of a conformance trace (core/traces/, docs/traces.md) run
// on a fake clock and scripted sockets, no network. The TypeScript device replays the same trace
// (test/helpers/replay.ts); test/unit/conformance.test.ts holds both to the trace's expected events.

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
)

// replayInput is one trace as the replay takes it: the engine's start (one device, built by core/engine-contract.ts)
// and the server's side of the conversation.
type replayInput struct {
	Start startMsg `json:"start"`
	// Script: [at_ms, op, arg]: open (the upgrade succeeds; arg the subprotocol its 101 names, if any), text (a JSON value, sent as its text, or a string as
	// is), binary (a length of zero bytes, or a hex string), close (a code; 1006 the TCP connection ended),
	// violation (a kind the socket library refused), stop (the run's end stops the device).
	Script [][]json.RawMessage `json:"script"`
	// Until: the clock runs to this ms after the script, then the device is stopped.
	Until float64 `json:"until"`
}

// replayLog collects what the device did, each event at its ms since the trace's start.
type replayLog struct {
	clock  *fakeClock
	start  float64
	events [][]any
}

func (l *replayLog) at() float64 { return l.clock.Now() - l.start }

func (l *replayLog) add(e ...any) { l.events = append(l.events, append([]any{l.at()}, e...)) }

type replaySocket struct {
	log    *replayLog
	n      int
	h      SocketEvents
	opened bool
	// protocol is what the script's open names: [t, "open", "chat"].
	protocol string
}

func (s *replaySocket) Send(b []byte) {
	var v any
	if json.Unmarshal(b, &v) == nil {
		s.log.add("send", s.n, json.RawMessage(b))
	} else {
		s.log.add("send_text", s.n, string(b))
	}
}
func (s *replaySocket) SendBinary(b []byte) { s.log.add("binary", s.n, len(b)) }
func (s *replaySocket) Ping()               { s.log.add("ping", s.n) }
func (s *replaySocket) Subprotocol() string { return s.protocol }

// Close of a socket whose upgrade never completed is no event: the k6 device cannot close a connecting socket (k6
// v2.2 blocks its VU; core/device-link.ts retire) and lets it go instead, this engine cancels the dial; neither sends
// anything.
func (s *replaySocket) Close(code int) {
	if s.opened {
		s.log.add("close", s.n, code)
	}
}

type replayNet struct {
	log     *replayLog
	sockets []*replaySocket
	// requests waiting for the script's answer ([t, "http", status, body] or [t, "http_error", why]), oldest first.
	requests []func(status int, body []byte, err string)
}

func (n *replayNet) Request(r HTTPRequest, _ float64, done func(status int, body []byte, err string)) {
	var body any
	if len(r.Body) > 0 {
		body = json.RawMessage(r.Body)
	}
	n.log.add("http", r.Method, r.URL, r.Headers, body)
	n.requests = append(n.requests, done)
}

func (n *replayNet) Open(url string, headers map[string]string, h SocketEvents) Socket {
	s := &replaySocket{log: n.log, n: len(n.sockets), h: h}
	n.sockets = append(n.sockets, s)
	n.log.add("open", s.n, url, headers)
	return s
}

type replaySink struct{ log *replayLog }

func (k replaySink) Add(r Record) {
	k.log.add("record", wireRecord{r.Name, r.Value, r.Profile, r.From - k.log.start, r.To - k.log.start, r.Phase, extra(r)})
}

// replayStart is the replay's clock origin: records' spans and events are counted from it.
const replayStart = 1_000_000

// replayTrace runs one trace and returns its events.
func replayTrace(in *replayInput) ([][]any, error) {
	if len(in.Start.Devices) != 1 {
		return nil, fmt.Errorf("a trace runs one device, the start names %d", len(in.Start.Devices))
	}
	clock := newFakeClock(replayStart)
	log := &replayLog{clock: clock, start: replayStart}
	net := &replayNet{log: log}
	env := &Env{Clock: clock, Net: net, Sink: replaySink{log}, Log: func(line string) { log.add("log", line) }}
	if in.Start.EndInMs > 0 {
		env.EndAt = replayStart + in.Start.EndInMs
	}
	devices, err := buildDevices(&in.Start, env)
	if err != nil {
		return nil, err
	}
	d := devices[0]
	d.Start(in.Start.Devices[0].DelayMs)
	last := func() *replaySocket {
		if len(net.sockets) == 0 {
			return nil
		}
		return net.sockets[len(net.sockets)-1]
	}
	for i, step := range in.Script {
		var at float64
		var op string
		if len(step) < 2 || json.Unmarshal(step[0], &at) != nil || json.Unmarshal(step[1], &op) != nil {
			return nil, fmt.Errorf("script step %d: want [at_ms, op, arg]", i)
		}
		if at < log.at() {
			return nil, fmt.Errorf("script step %d: at %v is before %v", i, at, log.at())
		}
		clock.Advance(at - log.at())
		var arg json.RawMessage
		if len(step) > 2 {
			arg = step[2]
		}
		if op == "stop" {
			d.Stop()
			continue
		}
		if op == "http" || op == "http_error" {
			if len(net.requests) == 0 {
				return nil, fmt.Errorf("script step %d: %s with no request waiting", i, op)
			}
			done := net.requests[0]
			net.requests = net.requests[1:]
			if op == "http_error" {
				var why string
				_ = json.Unmarshal(arg, &why)
				done(0, nil, why)
				continue
			}
			var status int
			_ = json.Unmarshal(arg, &status)
			var body []byte
			if len(step) > 3 {
				var str string
				if json.Unmarshal(step[3], &str) == nil {
					body = []byte(str)
				} else {
					body = step[3]
				}
			}
			done(status, body, "")
			continue
		}
		s := last()
		if s == nil {
			return nil, fmt.Errorf("script step %d: %s with no socket open", i, op)
		}
		switch op {
		case "open":
			s.opened = true
			s.protocol = ""
			_ = json.Unmarshal(arg, &s.protocol)
			s.h.OnOpen()
		case "text":
			var str string
			if json.Unmarshal(arg, &str) == nil {
				s.h.OnText([]byte(str))
			} else {
				s.h.OnText(arg)
			}
		case "binary":
			var n int
			var hx string
			if json.Unmarshal(arg, &n) == nil {
				s.h.OnBinary(make([]byte, n))
			} else if json.Unmarshal(arg, &hx) == nil {
				b, err := hex.DecodeString(hx)
				if err != nil {
					return nil, fmt.Errorf("script step %d: %v", i, err)
				}
				s.h.OnBinary(b)
			}
		case "close":
			var code int
			_ = json.Unmarshal(arg, &code)
			s.h.OnClose(code)
		case "violation":
			var kind string
			_ = json.Unmarshal(arg, &kind)
			s.h.OnViolation(kind)
		default:
			return nil, fmt.Errorf("script step %d: unknown op %q", i, op)
		}
	}
	if in.Until > log.at() {
		clock.Advance(in.Until - log.at())
	}
	d.Stop()
	return log.events, nil
}

// replayLines runs each trace of r (one JSON object a line) and writes one answer a line: {"events": […]} or
// {"error": "…"}.
func replayLines(r io.Reader, w io.Writer) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	enc := json.NewEncoder(w)
	for sc.Scan() {
		var in replayInput
		var out map[string]any
		if err := json.Unmarshal(sc.Bytes(), &in); err != nil {
			out = map[string]any{"error": err.Error()}
		} else if events, err := replayTrace(&in); err != nil {
			out = map[string]any{"error": err.Error()}
		} else {
			out = map[string]any{"events": events}
		}
		if err := enc.Encode(out); err != nil {
			return err
		}
	}
	return sc.Err()
}
