package main

// One virtual device's link, as core/device-link.ts runs it on k6: connect (path or hello), the dialect's handshake,
// keepalive and liveness, bounded intake, backoff and resume tokens, and every outcome as a record for k6 to turn
// into the same metrics. Every event (a timer, a socket's message or close) runs under the device's lock.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// Profile is the part of core/profiles.ts's Profile the link uses.
type Profile struct {
	Name      string `json:"name"`
	Connect   string `json:"connect"`
	Keepalive struct {
		AnswerServerPings bool    `json:"answer_server_pings"`
		Send              string  `json:"send"`
		IntervalMs        float64 `json:"interval_ms"`
	} `json:"keepalive"`
	Liveness struct {
		Detect    string  `json:"detect"`
		TimeoutMs float64 `json:"timeout_ms"`
		CheckMs   float64 `json:"check_ms"`
	} `json:"liveness"`
	Reconnect   Backoff `json:"reconnect"`
	Resume      bool    `json:"resume"`
	EndOfSpeech string  `json:"end_of_speech"`
	FrameBytes  int     `json:"frame_bytes"`
	// PlaybackPrebufferMs is the audio buffered before playback starts.
	PlaybackPrebufferMs float64  `json:"playback_prebuffer_ms"`
	BargeInMs           *float64 `json:"barge_in_ms"`
	AfterReply          string   `json:"after_reply"`
}

// Intake bounds what a device accepts from a server (core/device-link.ts INTAKE, sent by the k6 side).
type Intake struct {
	TextBytes         int `json:"textBytes"`
	BinaryBytes       int `json:"binaryBytes"`
	JSONDepth         int `json:"jsonDepth"`
	MessagesPerSecond int `json:"messagesPerSecond"`
	// UnsentBytes: what a socket may hold unsent before the server counts as not reading (core/device-link.ts
	// INTAKE.unsentBytes); the sockets' own bound (ws.go maxWriteBuffer) must be the same number.
	UnsentBytes int `json:"unsentBytes"`
}

const (
	closeNormal        = 1000
	closeProtocolError = 1002
	closeAbnormal      = 1006
	closeNoStatus      = 1005
)

type linkState int

const (
	stIdle linkState = iota
	stBackoff
	stConnecting
	stHandshaking
	stConnected
	stUnnoticed
	stClosed
	stGaveUp
	stStopped
)

// Socket is one WebSocket a device opened (real: ws.go; tests: a fake).
type Socket interface {
	// Send sends a text message; SendBinary a binary one.
	Send(b []byte)
	SendBinary(b []byte)
	Ping()
	// Close closes with code (0: drop the TCP connection without a close frame).
	Close(code int)
	// Subprotocol is the subprotocol the server's 101 named ("" for none).
	Subprotocol() string
}

// Net opens sockets; events of the socket arrive on h from another goroutine, never from within Open.
type Net interface {
	Open(url string, headers map[string]string, h SocketEvents) Socket
	// Request makes an HTTP request (the dialect's provision call); done is called once, from another goroutine,
	// with the status and body, or a non-empty err when there was no answer within timeoutMs.
	Request(r HTTPRequest, timeoutMs float64, done func(status int, body []byte, err string))
}

// HTTPRequest is a device's HTTP request (core/device-env.ts HttpRequest).
type HTTPRequest struct {
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers"`
	Body    []byte            `json:"-"`
}

// SocketEvents are what a socket tells its device.
type SocketEvents interface {
	OnOpen()
	OnText(b []byte)
	OnBinary(b []byte)
	// OnClose: the server closed (code), or the TCP connection ended (1006).
	OnClose(code int)
	// OnViolation: the socket library refused a frame (kind frame_too_big or bad_frame) and dropped the link.
	OnViolation(kind string)
}

// Device is one virtual device's link.
type Device struct {
	mu sync.Mutex
	// asked is the current attempt's Sec-WebSocket-Protocol header, the subprotocols it asked for ("" for none).
	asked   string
	id      string
	baseURL string
	profile *Profile
	dialect *Dialect
	env     *Env
	vars    Vars
	random  func() float64
	backoff *backoff

	state     linkState
	connected atomic.Bool
	attempt   int
	gen       int
	ws        Socket
	resume    string
	// provisioned: the dialect's provision call answered (a "boot" one is made once); provisionSeq names the call in
	// flight (an answer to an older one is ignored).
	provisioned  bool
	provisionSeq int
	// connectedAt, attemptAt, openedAt, lastRx: ms on the engine's clock.
	connectedAt, attemptAt, openedAt, lastRx float64
	lossNoticedAt                            float64
	lossNoticed                              bool
	pingSeq                                  int
	pending                                  *struct {
		id int
		at float64
	}
	conv       *conversation
	rxWindowAt float64
	rxInWindow int
	timers     timerList
	judging    bool // Stop is judging the end of the run (observing)
}

type timer struct{ cancel func() bool }

// timerList is a device's pending timers by name: a handful at most (an idle device's one or two), so a short list
// (24 B a timer) rather than a map (~340 B a device even when it holds two).
type timerList []namedTimer

type namedTimer struct {
	name string
	t    *timer
}

func (l timerList) get(name string) *timer {
	for _, e := range l {
		if e.name == name {
			return e.t
		}
	}
	return nil
}

func (l *timerList) set(name string, t *timer) {
	for i := range *l {
		if (*l)[i].name == name {
			(*l)[i].t = t
			return
		}
	}
	*l = append(*l, namedTimer{name, t})
}

func (l *timerList) remove(name string) {
	for i, e := range *l {
		if e.name == name {
			last := len(*l) - 1
			(*l)[i] = (*l)[last]
			(*l)[last] = namedTimer{}
			*l = (*l)[:last]
			return
		}
	}
}

// Env is what a device is given: clock, network, where its records go, and the run's shared settings.
type Env struct {
	Clock            Clock
	Net              Net
	Sink             Sink
	Token            string
	ConnectTimeoutMs float64
	// ProvisionURL is the http(s) base of the dialect's provision call ("": the device's target over http).
	ProvisionURL string
	Intake       Intake
	Timing       Timing
	Rules        *Rules
	// Log takes the lines the device says about itself (why it declared a link dead …), as core/device-env.ts log;
	// nil: nobody listens.
	Log func(line string)
	// tracer collects the frame trace of a traced start (trace.go); nil: no trace.
	tracer *tracer
	// EndAt is the run's end on Clock (0: none known). The device observes until then, as a k6 device does (its VU
	// stops there); after it only the end-of-run judgement records (see observing).
	EndAt float64
}

// NewDevice makes a device; Start connects it. Its conversations follow wake with the utterance u.
// vars are the device's own wire variables beyond its id, profile and token (core/device-env.ts deviceVars).
func NewDevice(id, baseURL string, p *Profile, d *Dialect, env *Env, seed string, wake WakeSchedule, u *Uplink,
	vars map[string]any) *Device {
	r := deviceRandom(seed, id)
	dev := &Device{id: id, baseURL: baseURL, profile: p, dialect: d, env: env, random: r}
	dev.conv = &conversation{d: dev, wake: wake, uplink: u, endedAt: math.Inf(-1)}
	dev.backoff = newBackoff(&p.Reconnect, r)
	// The dialect's declared variables, filled on the k6 side (deviceVars), and the run's token if declared.
	dev.vars = VarsOf(vars)
	if env.Token != "" && slices.Contains(d.Variables, "token") {
		dev.vars.Set("token", env.Token)
	}
	return dev
}

func (d *Device) now() float64 { return d.env.Clock.Now() }

// observing is false once the run's end has come, except while Stop judges what the end found. What a device would
// see after the end is the fleet's own teardown, not the server under test: when k6's VUs stop together, the engine
// closes its thousands of links at once and the engine and the server stall for a few hundred ms (10,000 talking
// devices: timers 100-230 ms late and playback underruns in the 300 ms after the first stop, none before it).
func (d *Device) observing() bool { return d.judging || d.env.EndAt == 0 || d.now() < d.env.EndAt }

// judgedAt is when the end-of-run judgement looks at the device: now, or the run's end if that has passed.
func (d *Device) judgedAt() float64 {
	if d.env.EndAt > 0 {
		return min(d.now(), d.env.EndAt)
	}
	return d.now()
}

func (d *Device) rec(r Record) {
	if !d.observing() {
		return
	}
	r.Profile = d.profile.Name
	r.Phase = d.env.Rules.phase(r.Name)
	d.env.Sink.Add(r)
}

// log says a line about the device, prefixed with its id, as core/device-env.ts log does (nil Log: nobody listens).
func (d *Device) log(line string) {
	if d.env.Log != nil {
		d.env.Log(d.id + ": " + line)
	}
}

// nextPoll is when a firmware that polls its link every `every` ms from connectedAt notices a close at `at`: its first
// check strictly after the close (core/device-rules.ts nextPoll).
func nextPoll(connectedAt, at, every float64) float64 {
	return connectedAt + (math.Floor((at-connectedAt)/every)+1)*every
}

func (d *Device) count(name string, n float64) { d.rec(Record{Name: name, Value: n}) }

func (d *Device) trend(name string, v float64) { d.rec(Record{Name: name, Value: v}) }

// setTimer replaces the named timer; a timer that fires after being replaced or cleared does nothing.
func (d *Device) setTimer(name string, ms float64, fn func()) {
	d.clearTimer(name)
	t := &timer{}
	d.timers.set(name, t)
	t.cancel = d.env.Clock.After(ms, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.timers.get(name) != t {
			return
		}
		d.timers.remove(name)
		fn()
	})
}

// setKeepaliveTimer sets a keepalive or silence-check timer, due at the end of its slot of the grid every device of
// the engine shares (Timing.KeepaliveGridMs): devices whose timers fall in one slot share one wake-up of the engine.
// The pong timeout stays exact: it is a bound the server is judged by.
func (d *Device) setKeepaliveTimer(name string, ms float64, fn func()) {
	now, g := d.now(), d.env.Timing.KeepaliveGridMs
	d.setTimer(name, math.Ceil((now+ms)/g)*g-now, fn)
}

func (d *Device) clearTimer(name string) {
	if t := d.timers.get(name); t != nil {
		if t.cancel != nil {
			t.cancel()
		}
		d.timers.remove(name)
	}
}

// Start connects after delayMs; a per-wake channel waits for the first wake (open).
func (d *Device) Start(delayMs float64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.conv.start(delayMs)
	if d.perWake() {
		d.state = stIdle
		return
	}
	d.state = stBackoff
	d.setTimer("connect", delayMs, d.connect)
}

// perWake: a channel per wake (the dialect's lifecycle), not one link for the device's life.
func (d *Device) perWake() bool { return d.dialect.Lifecycle == "per_wake" }

// open opens a per-wake channel (the wake word was heard); nothing when one is open or opening.
func (d *Device) open() {
	if d.state == stIdle {
		d.connect()
	}
}

// closeChannel closes a per-wake channel after its conversation (1000): a planned end, not a loss.
func (d *Device) closeChannel() {
	if !d.perWake() || d.state == stStopped || d.state == stIdle {
		return
	}
	if d.state == stConnected {
		d.count("links_down", 1)
	}
	d.stopKeepalive()
	d.clearTimer("connect")
	d.clearTimer("notice")
	if d.ws != nil {
		d.ws.Close(closeNormal)
		d.ws = nil
	}
	d.connected.Store(false)
	d.state = stIdle
}

// TakeFramesSent is the uplink frames sent since the last call (reported once a batch as audio_frames).
func (d *Device) TakeFramesSent() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conv.takeFramesSent()
}

// Connected is true while the handshake is done and the socket open.
func (d *Device) Connected() bool { return d.connected.Load() }

// Stop ends the link for good: nothing counted as lost; a device still coming back reports its wait so far.
func (d *Device) Stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state == stStopped {
		return
	}
	d.judging = true
	at := d.judgedAt()
	if d.lossNoticed && d.lossNoticedAt < at &&
		(d.state == stBackoff || d.state == stConnecting || d.state == stHandshaking) {
		waited := at - d.lossNoticedAt
		if waited >= d.env.Timing.ReconnectCensorMs {
			d.rec(Record{Name: "reconnect_time", Value: waited, From: d.lossNoticedAt, To: d.lossNoticedAt + waited})
		} else {
			d.count("reconnects_unfinished", 1)
		}
	}
	d.conv.stop()
	d.state = stStopped
	d.connected.Store(false)
	for len(d.timers) > 0 {
		d.clearTimer(d.timers[0].name)
	}
	if d.ws != nil {
		d.ws.Close(closeNormal)
		d.ws = nil
	}
}

// encodeURIComponent escapes as JS does: everything but A-Z a-z 0-9 - _ . ! ~ * ' ( ).
func encodeURIComponent(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("-_.!~*'()", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func (d *Device) byHello() bool {
	return d.dialect.Connect.Identify == "hello" || d.profile.Connect == "hello"
}

// attemptEvents ties a socket's events to the connect attempt that opened it.
type attemptEvents struct {
	d   *Device
	gen int
}

func (a attemptEvents) current() bool { return a.d.gen == a.gen && a.d.ws != nil }

func (a attemptEvents) OnOpen() {
	a.d.mu.Lock()
	defer a.d.mu.Unlock()
	if a.current() {
		a.d.onOpen()
	}
}

func (a attemptEvents) OnText(b []byte) {
	a.d.mu.Lock()
	defer a.d.mu.Unlock()
	if a.current() && a.d.intake(len(b), true) {
		a.d.onText(b)
	}
}

func (a attemptEvents) OnBinary(b []byte) {
	a.d.mu.Lock()
	defer a.d.mu.Unlock()
	if a.current() && a.d.intake(len(b), false) {
		a.d.conv.binary(b)
	}
}

func (a attemptEvents) OnClose(code int) {
	a.d.mu.Lock()
	defer a.d.mu.Unlock()
	if a.current() {
		a.d.linkEnded(code)
	}
}

func (a attemptEvents) OnViolation(kind string) {
	a.d.mu.Lock()
	defer a.d.mu.Unlock()
	if a.current() {
		a.d.violation(kind)
	}
}

func (d *Device) connect() {
	if d.state == stStopped || d.state == stGaveUp || d.state == stClosed {
		return
	}
	dl := d.dialect
	if !d.perWake() && (d.attempt > 0 || d.lossNoticed) {
		d.count("reconnect_attempts", 1)
	}
	d.state = stConnecting
	d.attemptAt = d.now()
	if pv := dl.Provision; pv != nil && (pv.When == "connect" || !d.provisioned) {
		d.provision(pv)
		return
	}
	d.openSocket()
}

// provision is the firmware's HTTP call before its socket (core/device-link.ts provision): timed
// (provision_latency), its answer's captures kept, then the socket; any other answer is a failed connect (cause
// provision, code the HTTP status or 1006).
func (d *Device) provision(pv *Provision) {
	d.provisionSeq++
	seq := d.provisionSeq
	base := d.env.ProvisionURL
	if base == "" {
		base = "http" + strings.TrimPrefix(d.baseURL, "ws")
	}
	filled, ok := Fill(pv.Path, &d.vars, encodeURIComponent)
	if !ok {
		filled = pv.Path
	}
	req := HTTPRequest{Method: pv.Method, URL: provisionTarget(base, filled), Headers: filledHeaders(pv.Headers, &d.vars)}
	if pv.Body != nil {
		req.Body = pv.Body.Render(&d.vars)
	}
	sentAt := d.now()
	timeout := d.env.ConnectTimeoutMs
	if timeout <= 0 {
		timeout = 10_000
	}
	failed := func(code int, why string) {
		d.log("provision " + pv.Method + " " + pv.Path + " failed: " + why)
		d.afterLoss(code, false, "provision", d.now())
	}
	d.setTimer("connect", timeout, func() {
		if seq != d.provisionSeq || d.state != stConnecting {
			return
		}
		d.provisionSeq++
		failed(closeAbnormal, fmt.Sprintf("no answer in %v ms", timeout))
	})
	d.env.Net.Request(req, timeout, func(status int, body []byte, errText string) {
		d.mu.Lock()
		defer d.mu.Unlock()
		if seq != d.provisionSeq || d.state != stConnecting {
			return
		}
		d.clearTimer("connect")
		now := d.now()
		d.trend("provision_latency", now-sentAt)
		if errText != "" {
			failed(closeAbnormal, errText)
			return
		}
		if status < 200 || status > 299 {
			failed(status, fmt.Sprintf("HTTP %d", status))
			return
		}
		var answer map[string]any
		if json.Unmarshal(body, &answer) != nil || answer == nil {
			failed(closeAbnormal, "the answer is not a JSON object")
			return
		}
		pv.Capture.Apply(answer, &d.vars)
		d.provisioned = true
		d.attemptAt = now
		d.openSocket()
	})
}

// filledHeaders is header templates filled; one whose placeholder is unset is left out (core/device-env.ts).
func filledHeaders(templates map[string]string, vars *Vars) map[string]string {
	headers := map[string]string{}
	for k, t := range templates {
		if v, ok := Fill(t, vars, nil); ok {
			headers[k] = v
		}
	}
	return headers
}

// openSocket opens the attempt's socket: the dialect's connect (or a provision answer's ws_url) on the target.
func (d *Device) openSocket() {
	dl, p := d.dialect, d.profile
	if dl.Resume && p.Resume && d.resume != "" {
		d.vars.Set("resume_token", d.resume)
	} else {
		d.vars.Delete("resume_token")
	}
	byHello := d.byHello()
	path := dl.Connect.Path
	if byHello && dl.Connect.Identify == "profile" && dl.Connect.HelloPath != "" {
		path = dl.Connect.HelloPath
	}
	filled, ok := Fill(path, &d.vars, encodeURIComponent)
	if !ok {
		filled = path
	}
	url := d.baseURL + filled
	// A provision answer's ws_url: its path and query, on the run's target (core/device-env.ts connectRequest).
	given, hasGiven := "", false
	if w, ok := d.vars.Get("ws_url").(string); ok {
		given, hasGiven = wsPathOf(w)
	}
	if hasGiven {
		url = d.baseURL + given
	} else if len(dl.Connect.QueryKeys) > 0 {
		// The dialect's query on every kind of connect.
		var q []string
		for _, k := range dl.Connect.QueryKeys {
			if v, ok := Fill(dl.Connect.Query[k], &d.vars, encodeURIComponent); ok {
				q = append(q, encodeURIComponent(k)+"="+v)
			}
		}
		if len(q) > 0 {
			url += "?" + strings.Join(q, "&")
		}
	}
	headers := filledHeaders(dl.Connect.Headers, &d.vars)
	d.gen++
	d.asked = askedSubprotocols(headers)
	d.ws = d.env.Net.Open(url, headers, attemptEvents{d: d, gen: d.gen})
	timeout := d.env.ConnectTimeoutMs
	if timeout <= 0 {
		timeout = 10_000
	}
	d.setTimer("connect", timeout, func() { d.giveUpAttempt() })
}

func (d *Device) onOpen() {
	d.state = stHandshaking
	d.openedAt = d.now()
	d.lastRx = d.openedAt
	d.trend("connect_time", d.openedAt-d.attemptAt)
	// A subprotocol the device did not ask for, or none where it asked for one: the connect fails (RFC 6455 §4.1).
	if wrong := subprotocolProblem(d.asked, d.ws.Subprotocol()); wrong != "" {
		d.violation(wrong)
		return
	}
	if d.byHello() && d.dialect.Send.Hello != nil {
		d.ws.Send(d.dialect.Send.Hello.Render(&d.vars))
	}
	if d.dialect.Recv.Ready == nil {
		// A dialect with no ready message: the link is up when the socket opens (after its hello, if any).
		d.onReady(map[string]any{})
	}
}

func (d *Device) giveUpAttempt() {
	if d.state != stConnecting && d.state != stHandshaking {
		return
	}
	d.log("connect timeout")
	d.abandonSocket()
	d.afterLoss(closeAbnormal, false, "timeout", d.now())
}

func (d *Device) onReady(msg map[string]any) {
	now := d.now()
	d.dialect.Capture["ready"].Apply(msg, &d.vars)
	d.clearTimer("connect")
	d.state = stConnected
	d.connected.Store(true)
	d.count("links_up", 1)
	d.trend("handshake_time", now-d.openedAt)
	d.connectedAt = now
	d.resume = ""
	if s, ok := d.vars.Get("resume_token").(string); ok {
		d.resume = s
	}
	d.rec(Record{Name: "connect_success", Value: 1, From: d.attemptAt, To: now})
	if d.lossNoticed {
		d.rec(Record{Name: "reconnect_time", Value: now - d.lossNoticedAt, From: d.lossNoticedAt, To: now})
	}
	d.lossNoticed = false
	d.attempt = 0
	d.backoff.reset()
	d.startKeepalive()
	d.conv.linkUp()
}

// intake bounds what the device accepts (core/device-link.ts INTAKE); false when the message broke a bound.
func (d *Device) intake(n int, isText bool) bool {
	now := d.now()
	d.lastRx = now
	in := d.env.Intake
	if now-d.rxWindowAt >= 1000 {
		d.rxWindowAt = now
		d.rxInWindow = 0
	}
	d.rxInWindow++
	switch {
	case d.rxInWindow > in.MessagesPerSecond:
		d.violation("flood")
	case isText && n > in.TextBytes:
		d.violation("text_too_long")
	case !isText && n > in.BinaryBytes:
		d.violation("frame_too_big")
	default:
		return true
	}
	return false
}

// jsonDepth is the nesting depth of a JSON text counted on its brackets outside strings, stopping past limit.
func jsonDepth(b []byte, limit int) int {
	depth, top, inString := 0, 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inString && c == '\\':
			i++
		case inString && c == '"':
			inString = false
		case inString:
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			if depth > top {
				top = depth
			}
			if top > limit {
				return top
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return top
}

// messageMaps are the decoded messages' top-level objects, reused (onText).
var messageMaps = sync.Pool{New: func() any { return map[string]any{} }}

// maxPooledKeys bounds the maps messageMaps keeps: every dialect's messages have a handful of top-level keys.
const maxPooledKeys = 64

func (d *Device) onText(b []byte) {
	limit := d.env.Intake.JSONDepth
	if !utf8.Valid(b) {
		d.violation("invalid_utf8")
		return
	}
	if len(b) > 2*limit && jsonDepth(b, limit) > limit {
		d.violation("json_too_deep")
		return
	}
	// The message's top-level object is a map from a pool, emptied and handed back when the message is done: nothing
	// keeps it (a capture copies scalars out, a composite as its JSON text), and a map that grows once per message was
	// the engine's largest allocation (go test -bench Message -benchmem).
	m := messageMaps.Get().(map[string]any)
	defer func() {
		// A map a hostile message grew to thousands of keys is not kept: clearing it would cost its size every time.
		if len(m) <= maxPooledKeys {
			clear(m)
			messageMaps.Put(m)
		}
	}()
	msg := m
	if json.Unmarshal(b, &msg) != nil || msg == nil {
		// Not a JSON object, where every dialect speaks JSON objects.
		d.violation("not_json")
		return
	}
	step := d.message(msg, b)
	if d.env.tracer != nil {
		// The step this device acted on, in its own matching order: `try` labels the frame with it.
		d.env.tracer.add(d.id, "step", step)
	}
}

// message acts on a server message; it returns the step it took, "ignore" for one the dialect knows but the device
// needed nothing from, or "" for one that matches nothing (counted as unmatched).
func (d *Device) message(msg map[string]any, b []byte) string {
	dl, vars := d.dialect, &d.vars
	if d.state == stHandshaking && dl.Recv.Ready.Matches(msg, vars) {
		d.onReady(msg)
		return "ready"
	}
	if dl.Recv.Ping != nil && dl.Recv.Ping.Matches(msg, vars) {
		dl.Capture["ping"].Apply(msg, vars)
		if d.profile.Keepalive.AnswerServerPings && dl.Send.Pong != nil && d.ws != nil {
			d.ws.Send(dl.Send.Pong.Render(vars))
		}
		return "ping"
	}
	if dl.Recv.Pong != nil && dl.Recv.Pong.Matches(msg, vars) {
		dl.Capture["pong"].Apply(msg, vars)
		id, has := vars.Lookup("pong_id")
		if pp := d.pending; pp != nil && (!has || id == nil || text(id) == fmt.Sprint(pp.id)) {
			d.trend("ping_rtt", d.now()-pp.at)
			d.pending = nil
			d.clearTimer("pong")
		}
		return "pong"
	}
	// A request the server expects an answer to (xiaozhi's MCP initialize, tools/list): answered at once.
	if a := dl.answerOf(msg, vars); a != nil {
		if d.ws != nil {
			d.ws.Send(a.Render(msg, vars))
		}
		return "answer"
	}
	if step := d.conv.message(msg); step != "" {
		return step
	}
	if dl.Known(msg, vars) {
		return "ignore"
	}
	t := msg[dl.TypeField]
	// A copy of what the log line shows: b is the socket's read buffer, handed back to its pool when this returns
	// (third_party/nbio/PATCHED.md), and the record is serialized at the next batch.
	d.rec(Record{Name: "unmatched_messages", Value: 1, Type: t, Raw: bytes.Clone(b[:min(len(b), maxRawText)])})
	return ""
}

// violation: the server broke the protocol; counted by kind, the link closed unless the rules say the device lets
// that kind pass (Rules.NotedViolations: a message it cannot use but can skip).
func (d *Device) violation(kind string) {
	now := d.now()
	d.rec(Record{Name: "protocol_violations", Value: 1, From: now, To: now, Kind: kind})
	if d.env.Rules.keepsLink(kind) || d.state == stStopped || d.ws == nil {
		return
	}
	was := d.state == stConnected
	if was {
		d.count("links_down", 1)
	}
	d.abandonSocket()
	d.afterLoss(closeProtocolError, was, "violation", now)
}

func (d *Device) linkEnded(code int) {
	if d.state == stStopped {
		return
	}
	at := d.now()
	if d.state != stConnected {
		cause := "handshake"
		if d.state == stConnecting {
			cause = "refused"
		}
		d.abandonSocket()
		d.afterLoss(code, false, cause, at)
		return
	}
	cause := "server_close"
	if code == closeAbnormal {
		cause = "abnormal"
	}
	d.count("links_down", 1)
	d.abandonSocket()
	if d.perWake() && !d.conv.busy() && code == closeNormal {
		// The server closed a per-wake channel between conversations (xiaozhi's no-voice close): how such a channel
		// ends, not a loss. Any other end (1006, an error code) is a lost link even with no conversation on it.
		d.stopKeepalive()
		d.state = stIdle
		d.conv.linkLost(code, true, false)
		return
	}
	lv := d.profile.Liveness
	if lv.Detect == "close" && lv.CheckMs > 0 {
		// Firmware that polls a flag only sees the close at its next check.
		next := nextPoll(d.connectedAt, at, lv.CheckMs)
		d.state = stUnnoticed
		d.stopKeepalive()
		d.setTimer("notice", next-at, func() { d.afterLoss(code, true, cause, at) })
		return
	}
	d.afterLoss(code, true, cause, at)
}

func (d *Device) declareDead(why string) {
	if d.state != stConnected {
		return
	}
	if d.perWake() && !d.conv.busy() {
		// A per-wake channel with no conversation on it timed out: the firmware closes it and goes idle. Not a loss.
		d.log("channel closed by the device (" + why + ")")
		d.closeChannel()
		d.conv.linkLost(closeNormal, true, false)
		return
	}
	d.log("link dead (" + why + ")")
	d.count("links_down", 1)
	d.abandonSocket()
	d.afterLoss(closeAbnormal, true, "liveness", d.now())
}

// afterLoss: a link (wasConnected) or a connect try ended at `at` for `cause`; then closed for good, given up, or back
// off and retry.
func (d *Device) afterLoss(code int, wasConnected bool, cause string, at float64) {
	now := d.now()
	d.stopKeepalive()
	d.clearTimer("connect")
	d.connected.Store(false)
	from := d.attemptAt
	if wasConnected {
		from = at
	}
	if wasConnected {
		// A link lost outside every fault window; a connect that failed is connect_success's alone (one cause, one SLO).
		d.rec(Record{Name: "unplanned_drops", Value: 1, From: from, To: at, Code: code, Cause: cause})
		d.rec(Record{Name: "connection_drops", Value: 1, Code: code})
		if now-d.connectedAt < d.env.Timing.FlapMs {
			d.count("flaps", 1)
		}
		if !d.perWake() {
			d.lossNoticed = true
			d.lossNoticedAt = now
		}
		d.rec(Record{Name: "_link_lost", From: d.connectedAt, To: now})
	} else {
		d.rec(Record{Name: "connect_success", Value: 0, From: from, To: at, Code: code, Cause: cause})
	}
	if d.perWake() {
		// A per-wake channel is not reconnected: the conversation on it is lost, the next wake opens a new one. It
		// owes no reconnect (what it owes is that the next wake connects: connect_success, wake_success).
		if wasConnected {
			d.count("reconnects_abandoned", 1)
		}
		d.state = stIdle
		d.conv.linkLost(code, wasConnected, false)
		return
	}
	rp := &d.profile.Reconnect
	if code == closeNormal && rp.On == "abnormal" {
		d.state = stClosed
		if wasConnected {
			d.count("reconnects_abandoned", 1)
		}
		d.conv.linkLost(code, wasConnected, true)
		return
	}
	d.attempt++
	if rp.MaxAttempts > 0 && d.attempt > rp.MaxAttempts {
		d.state = stGaveUp
		d.count("devices_gave_up", 1)
		d.conv.linkLost(code, wasConnected, true)
		return
	}
	d.state = stBackoff
	d.conv.linkLost(code, wasConnected, false)
	d.setTimer("connect", d.backoff.next(d.attempt), d.connect)
}

func (d *Device) abandonSocket() {
	if d.ws != nil {
		d.ws.Close(0)
		d.ws = nil
	}
	d.connected.Store(false)
}

func (d *Device) startKeepalive() {
	p := d.profile
	if p.Keepalive.Send != "none" && p.Keepalive.IntervalMs > 0 {
		var tick func()
		tick = func() {
			if d.state != stConnected || d.ws == nil {
				return
			}
			if p.Keepalive.Send == "ws-ping" {
				d.ws.Ping()
			} else if d.dialect.Send.Ping != nil {
				d.pingSeq++
				at := d.now()
				d.vars.Set("ping_id", float64(d.pingSeq))
				d.vars.Set("now", math.Floor(at))
				d.ws.Send(d.dialect.Send.Ping.Render(&d.vars))
				if d.pending == nil {
					d.pending = &struct {
						id int
						at float64
					}{d.pingSeq, at}
					if p.Liveness.Detect == "pong-timeout" {
						d.setTimer("pong", p.Liveness.TimeoutMs, func() {
							d.declareDead("no pong in " + text(p.Liveness.TimeoutMs) + " ms")
						})
					}
				}
			}
			d.setKeepaliveTimer("keepalive", p.Keepalive.IntervalMs, tick)
		}
		d.setKeepaliveTimer("keepalive", p.Keepalive.IntervalMs, tick)
	}
	if p.Liveness.Detect == "silence" {
		every := p.Liveness.CheckMs
		if every <= 0 {
			every = 1000
		}
		var check func()
		check = func() {
			if d.state != stConnected {
				return
			}
			if d.now()-d.lastRx >= p.Liveness.TimeoutMs {
				d.declareDead("silent for " + text(p.Liveness.TimeoutMs) + " ms")
				return
			}
			d.setKeepaliveTimer("liveness", every, check)
		}
		d.setKeepaliveTimer("liveness", every, check)
	}
}

func (d *Device) stopKeepalive() {
	d.clearTimer("keepalive")
	d.clearTimer("liveness")
	d.clearTimer("pong")
	d.pending = nil
}
