package main

// The device's link on a fake clock and fake sockets, ported from test/unit's device tests: the same dialect data
// (core/dialects/wakestorm.json) and profiles, the same outcomes.

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
)

type fakeSocket struct {
	url     string
	headers map[string]string
	h       SocketEvents
	sent    []string
	binary  []int
	pings   int
	closed  int
}

func (s *fakeSocket) Send(b []byte)       { s.sent = append(s.sent, string(b)) }
func (s *fakeSocket) SendBinary(b []byte) { s.binary = append(s.binary, len(b)) }
func (s *fakeSocket) Ping()               { s.pings++ }
func (s *fakeSocket) Close(code int)      { s.closed = max(code, 1) }
func (s *fakeSocket) Subprotocol() string { return "" }

type fakeNet struct {
	noHTTP
	sockets []*fakeSocket
}

// noHTTP is the Request of a test network whose devices make no provision call: a call answers "no HTTP here".
type noHTTP struct{}

func (noHTTP) Request(_ HTTPRequest, _ float64, done func(int, []byte, string)) {
	go done(0, nil, "no HTTP in this test")
}

func (n *fakeNet) Open(url string, headers map[string]string, h SocketEvents) Socket {
	s := &fakeSocket{url: url, headers: headers, h: h}
	n.sockets = append(n.sockets, s)
	return s
}

func (n *fakeNet) last() *fakeSocket { return n.sockets[len(n.sockets)-1] }

type memSink struct {
	mu   sync.Mutex
	recs []Record
}

func (m *memSink) Add(r Record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs = append(m.recs, r)
}

func (m *memSink) named(name string) []Record {
	var out []Record
	for _, r := range m.recs {
		if r.Name == name {
			out = append(out, r)
		}
	}
	return out
}

func (m *memSink) sum(name string) float64 {
	t := 0.0
	for _, r := range m.named(name) {
		t += r.Value
	}
	return t
}

func shippedDialect(t *testing.T, name string) *Dialect {
	t.Helper()
	b, err := os.ReadFile("../core/dialects/" + name + ".json")
	if err != nil {
		t.Fatal(err)
	}
	d, err := ParseDialect(b)
	if err != nil {
		t.Fatal(err)
	}
	d.TypeField = "type"
	return d
}

func recommended() *Profile {
	p := &Profile{Name: "recommended", Connect: "path", Resume: true}
	p.Keepalive.Send, p.Keepalive.IntervalMs = "json-ping", 15_000
	p.Liveness.Detect, p.Liveness.TimeoutMs = "pong-timeout", 10_000
	p.Reconnect = Backoff{Policy: "full-jitter", BaseMs: 500, CapMs: 30_000, On: "abnormal"}
	return p
}

// timing is what engine-fleet.ts sends from core/'s constants.
var timing = Timing{
	SessionStallMs: 15_000, BargeInWaitMs: 5000, VadMaxTrailingMs: 5000, PlaybackGapToleranceMs: 20,
	MaxReplyAudioMs: 120_000, OverrunSlackBytes: 4096, SlipAfterFrames: 3, WakeAckTimeoutMs: 10_000, EndDueMs: 5000, LateAudioGraceMs: 2000,
	ResumeGraceMs: 30_000, ReconnectCensorMs: 10_000, FlapMs: 2000, KeepaliveGridMs: 10,
}

// rules is core/device-rules.ts DEVICE_RULES as engine-fleet.ts sends it: read from the corpus's first start
// (testdata/corpus.jsonl, written from core/ by test/helpers/record-traces.ts), so the tests hold no copy of them.
func rules() *Rules {
	f, err := os.Open("testdata/corpus.jsonl")
	if err != nil {
		panic(err)
	}
	defer f.Close()
	line, err := bufio.NewReaderSize(f, 1<<20).ReadBytes('\n')
	if err != nil {
		panic(err)
	}
	var e struct {
		Input struct {
			Start struct {
				Rules Rules `json:"rules"`
			} `json:"start"`
		} `json:"input"`
	}
	if err := json.Unmarshal(line, &e); err != nil {
		panic(err)
	}
	r := &e.Input.Start.Rules
	if err := r.compile(); err != nil {
		panic(err)
	}
	return r
}

var intake = Intake{TextBytes: 64 * 1024, BinaryBytes: 1 << 20, JSONDepth: 32, MessagesPerSecond: 1000, UnsentBytes: 1 << 20}

type rig struct {
	clock *fakeClock
	net   *fakeNet
	sink  *memSink
	d     *Device
}

func newRig(t *testing.T, p *Profile) *rig {
	r := &rig{clock: newFakeClock(1_000_000), net: &fakeNet{}, sink: &memSink{}}
	env := &Env{Clock: r.clock, Net: r.net, Sink: r.sink, Token: "tok", Intake: intake, Timing: timing, Rules: rules()}
	r.d = NewDevice("dev-1", "ws://127.0.0.1:1", p, shippedDialect(t, "wakestorm"), env, "seed", WakeSchedule{Mode: "off"}, nil,
		map[string]any{"device_id": "dev-1", "profile": p.Name, "protocol_version": 1.0})
	return r
}

func (r *rig) msg(v map[string]any) {
	b, _ := json.Marshal(v)
	r.net.last().h.OnText(b)
}

func (r *rig) connect(t *testing.T) {
	r.d.Start(0)
	r.clock.Advance(0)
	r.clock.Advance(3)
	r.net.last().h.OnOpen()
	r.clock.Advance(2)
	r.msg(map[string]any{"type": "connected", "resume_token": "r-1", "resumed": false})
	if !r.d.Connected() {
		t.Fatal("not connected after ready")
	}
}

func TestConnectsByPathWithTokenAndResume(t *testing.T) {
	r := newRig(t, recommended())
	r.connect(t)
	s := r.net.last()
	if s.url != "ws://127.0.0.1:1/ws/dev-1" || s.headers["Authorization"] != "Bearer tok" {
		t.Fatalf("url %s headers %v", s.url, s.headers)
	}
	if got := r.sink.named("connect_time"); len(got) != 1 || got[0].Value != 3 {
		t.Fatalf("connect_time %v", got)
	}
	if got := r.sink.named("handshake_time"); len(got) != 1 || got[0].Value != 2 {
		t.Fatalf("handshake_time %v", got)
	}
	if r.sink.sum("links_up") != 1 || r.sink.sum("connect_success") != 1 {
		t.Fatal("links_up and connect_success")
	}
	// A cut: the device backs off, reconnects with its resume token, and times the reconnect.
	s.h.OnClose(closeAbnormal)
	if r.d.Connected() || r.sink.sum("links_down") != 1 {
		t.Fatal("still connected after a cut")
	}
	drops := r.sink.named("unplanned_drops")
	if len(drops) != 1 || drops[0].Code != closeAbnormal || drops[0].Cause != "abnormal" || drops[0].Phase != phaseSteadyOnly {
		t.Fatalf("unplanned_drops %+v", drops)
	}
	r.clock.Advance(600)
	s2 := r.net.last()
	if s2 == s || !strings.HasSuffix(s2.url, "/ws/dev-1?resume=r-1") {
		t.Fatalf("reconnect url %s", s2.url)
	}
	s2.h.OnOpen()
	r.msg(map[string]any{"type": "connected", "resume_token": "r-2", "resumed": true})
	rt := r.sink.named("reconnect_time")
	if len(rt) != 1 || rt[0].Value <= 0 || rt[0].Value > 600 || r.sink.sum("reconnect_attempts") != 1 {
		t.Fatalf("reconnect_time %+v attempts %v", rt, r.sink.sum("reconnect_attempts"))
	}
}

func TestKeepaliveAndPongTimeout(t *testing.T) {
	r := newRig(t, recommended())
	r.connect(t)
	s := r.net.last()
	r.clock.Advance(15_005) // connected at 1_000_005: the ping's grid slot ends at 1_015_010
	if len(s.sent) != 1 || !strings.HasPrefix(s.sent[0], `{"type":"ping","id":1,"t":`) {
		t.Fatalf("ping %v", s.sent)
	}
	r.clock.Advance(40)
	r.msg(map[string]any{"type": "pong", "id": 1})
	if got := r.sink.named("ping_rtt"); len(got) != 1 || got[0].Value != 40 {
		t.Fatalf("ping_rtt %v", got)
	}
	// A pong that never comes: dead after the profile's timeout.
	r.clock.Advance(15_000 + 10_000)
	if r.d.Connected() {
		t.Fatal("alive without a pong")
	}
	if d := r.sink.named("unplanned_drops"); len(d) != 1 || d[0].Cause != "liveness" {
		t.Fatalf("drops %+v", d)
	}
}

func TestServerPingAnsweredAndHello(t *testing.T) {
	p := recommended()
	p.Connect = "hello"
	p.Keepalive.AnswerServerPings = true
	r := newRig(t, p)
	r.d.Start(0)
	r.clock.Advance(0)
	s := r.net.last()
	if s.url != "ws://127.0.0.1:1/ws" {
		t.Fatalf("hello url %s", s.url)
	}
	s.h.OnOpen()
	if len(s.sent) != 1 || !strings.HasPrefix(s.sent[0], `{"type":"hello","device_id":"dev-1","protocol":1,"profile":"recommended","audio":{`) {
		t.Fatalf("hello %v", s.sent)
	}
	if strings.Contains(s.sent[0], "resume") {
		t.Fatalf("an unset resume token is left out: %s", s.sent[0])
	}
	r.msg(map[string]any{"type": "connected"})
	r.msg(map[string]any{"type": "ping", "t": 123.0})
	if s.sent[len(s.sent)-1] != `{"type":"pong","t":123}` {
		t.Fatalf("pong %v", s.sent)
	}
}

func TestIntakeViolations(t *testing.T) {
	cases := map[string]func(r *rig){
		"flood": func(r *rig) {
			for i := 0; i < 1200; i++ {
				r.msg(map[string]any{"type": "noise"})
			}
		},
		"frame_too_big": func(r *rig) { r.net.last().h.OnBinary(make([]byte, 2<<20)) },
		"text_too_long": func(r *rig) { r.msg(map[string]any{"type": "x", "pad": strings.Repeat("y", 70_000)}) },
		"json_too_deep": func(r *rig) {
			r.net.last().h.OnText([]byte(strings.Repeat("[", 40) + "1" + strings.Repeat("]", 40)))
		},
		"invalid_utf8": func(r *rig) { r.net.last().h.OnText([]byte("{\"type\":\"x\",\"t\":\"\xff\xfe\"}")) },
		"bad_frame":    func(r *rig) { r.net.last().h.OnViolation("bad_frame") },
	}
	for kind, send := range cases {
		r := newRig(t, recommended())
		r.connect(t)
		send(r)
		v := r.sink.named("protocol_violations")
		if len(v) != 1 || v[0].Kind != kind {
			t.Fatalf("%s: %+v", kind, v)
		}
		if r.d.Connected() {
			t.Fatalf("%s: the link stays up", kind)
		}
	}
}

func TestUnmatchedCountedByType(t *testing.T) {
	r := newRig(t, recommended())
	r.connect(t)
	r.msg(map[string]any{"type": "audio_stream_start"})
	r.msg(map[string]any{"type": "llm_response"})
	u := r.sink.named("unmatched_messages")
	if len(u) != 1 || u[0].Type != "audio_stream_start" {
		t.Fatalf("unmatched %+v", u)
	}
}

func TestStopCensorsOrJudgesAWaitingDevice(t *testing.T) {
	p := recommended()
	p.Reconnect = Backoff{Policy: "fixed", BaseMs: 60_000, CapMs: 60_000, On: "abnormal"}
	r := newRig(t, p)
	r.connect(t)
	r.net.last().h.OnClose(closeAbnormal)
	r.clock.Advance(12_000)
	r.d.Stop()
	if rt := r.sink.named("reconnect_time"); len(rt) != 1 || rt[0].Value != 12_000 {
		t.Fatalf("a wait past the censor bound is judged: %+v", rt)
	}
	r2 := newRig(t, p)
	r2.connect(t)
	r2.net.last().h.OnClose(closeAbnormal)
	r2.clock.Advance(2_000)
	r2.d.Stop()
	if r2.sink.sum("reconnects_unfinished") != 1 || len(r2.sink.named("reconnect_time")) != 0 {
		t.Fatal("a short wait is unfinished")
	}
}

func TestCloseWithNormalIsFinalForAbnormalOnlyProfiles(t *testing.T) {
	r := newRig(t, recommended())
	r.connect(t)
	r.net.last().h.OnClose(closeNormal)
	r.clock.Advance(120_000)
	if len(r.net.sockets) != 1 || r.sink.sum("reconnects_abandoned") != 1 {
		t.Fatalf("sockets %d abandoned %v", len(r.net.sockets), r.sink.sum("reconnects_abandoned"))
	}
}

func TestDeviceRandomMatchesCore(t *testing.T) {
	// core/rng.ts: deviceRandom('seed', 'dev-1')() (node -e, printed once and copied here).
	got := deviceRandom("seed", "dev-1")()
	if got != wantFirstRandom {
		t.Fatalf("first random %v, core/rng.ts gives %v", got, wantFirstRandom)
	}
}

const wantFirstRandom = 0.7933050678111613

func TestAStartWithoutEveryTimingBoundIsRefused(t *testing.T) {
	if f := timing.missing(); f != "" {
		t.Fatalf("complete timing reported missing %s", f)
	}
	partial := timing
	partial.FlapMs = 0
	if f := partial.missing(); f != "flap_ms" {
		t.Fatalf("missing %q", f)
	}
	m := &startMsg{Devices: []startDevice{{ID: "d"}}, Wake: WakeSchedule{Mode: "off"}, Intake: intake, Timing: partial}
	if _, err := refusal(m); err == nil || !strings.Contains(err.Error(), "timing.flap_ms") {
		t.Fatalf("refusal %v", err)
	}
}

func TestKeepaliveTimersShareAGrid(t *testing.T) {
	r := newRig(t, recommended())
	r.clock.Advance(3) // off the grid: now ends in ...003
	fired := []float64{}
	r.d.mu.Lock()
	r.d.setKeepaliveTimer("a", 15_000, func() { fired = append(fired, r.clock.Now()) })
	r.d.mu.Unlock()
	r.clock.Advance(4)
	r.d.mu.Lock()
	r.d.setKeepaliveTimer("b", 15_000, func() { fired = append(fired, r.clock.Now()) })
	r.d.mu.Unlock()
	r.clock.Advance(14_999)
	if len(fired) != 0 {
		t.Fatalf("fired before its slot: %v", fired)
	}
	r.clock.Advance(10)
	// Both due in the slot ending at 1_015_010: one wake-up, at most a grid step late.
	if len(fired) != 2 || fired[0] != 1_015_010 || fired[1] != 1_015_010 {
		t.Fatalf("fired %v, want both at 1015010", fired)
	}
}

// The socket library hands a message's buffer back to its pool when the handler returns (ws.go,
// ReleaseWebsocketPayload): nothing the device keeps may point into it.
func TestKeepsNothingOfAMessageBuffer(t *testing.T) {
	r := newRig(t, recommended())
	r.d.Start(0)
	r.clock.Advance(3)
	r.net.last().h.OnOpen()
	b, _ := json.Marshal(map[string]any{"type": "connected", "resume_token": "r-1", "resumed": false})
	r.net.last().h.OnText(b)
	for i := range b {
		b[i] = 'x'
	}
	if got := r.d.vars.Get("resume_token"); got != "r-1" {
		t.Fatalf("resume token after the buffer was reused: %v", got)
	}
}

// The decoded message's map is reused (messageMaps): a key of one message must not be seen in the next, from a
// pooled map or from one a hostile message grew past the pool's bound.
func TestNoKeyOfOneMessageInTheNext(t *testing.T) {
	p := recommended()
	p.Keepalive.AnswerServerPings = true
	r := newRig(t, p)
	r.connect(t)
	s := r.net.last()
	big := map[string]any{"type": "ping", "t": 7.0}
	for i := range 2 * maxPooledKeys {
		big[fmt.Sprintf("k%d", i)] = i
	}
	for _, first := range []map[string]any{{"type": "ping", "t": 5.0}, big} {
		r.msg(first)
		r.msg(map[string]any{"type": "ping"})
		if got := s.sent[len(s.sent)-1]; got != `{"type":"pong"}` {
			t.Fatalf("the pong to a ping without t, after one with %d keys: %s", len(first), got)
		}
	}
}

// heldClock fires its timers only when told, at whatever time it is then: a scheduler that runs them late.
type heldClock struct {
	now     float64
	pending []func()
}

func (c *heldClock) Now() float64 { return c.now }
func (c *heldClock) After(_ float64, fn func()) func() bool {
	c.pending = append(c.pending, fn)
	return func() bool { return false }
}

// The engine's timer lag is measured until the run's end, like everything a device observes.
func TestTimerLagIsMeasuredUntilTheRunsEnd(t *testing.T) {
	held := &heldClock{now: 1000}
	c := &lagClock{Clock: held, endAt: 1100}
	c.After(10, func() {})  // due 1010
	c.After(90, func() {})  // due 1090
	c.After(150, func() {}) // due 1150: after the end
	held.now = 1050
	held.pending[0]()
	if got := c.takeMaxMs(); got != 40 {
		t.Fatalf("a timer 40 ms late before the end: %v", got)
	}
	held.now = 1400
	held.pending[1]()
	held.pending[2]()
	if got := c.takeMaxMs(); got != 10 {
		t.Fatalf("due 10 ms before the end, fired 300 ms after it: late %v, want 10 (as late as the end)", got)
	}
	c.endAt = 0
	c.After(10, func() {}) // due 1410
	held.now = 1500
	held.pending[3]()
	if got := c.takeMaxMs(); got != 90 {
		t.Fatalf("with no end every timer is measured: %v", got)
	}
}

// Every firing lands in the bucket of its lag (upper bounds inclusive, the rest past the last), up to the run's end.
func TestTimerLagIsCountedPerFiring(t *testing.T) {
	held := &heldClock{now: 1000}
	c := newLagClock(held, 1100, []float64{1, 5, 10})
	for _, late := range []float64{0.5, 1, 3, 5, 7, 40} {
		c.After(0, func() {})
		held.now += late
		held.pending[len(held.pending)-1]()
		held.now -= late
	}
	c.After(90, func() {})  // due 1090, fires at 1400: counted as 10 ms late (the end)
	c.After(200, func() {}) // due 1200: after the end, not counted
	held.now = 1400
	held.pending[6]()
	held.pending[7]()
	if got := c.takeCounts(); !slices.Equal(got, []int64{2, 2, 2, 1}) {
		t.Fatalf("counts %v, want [2 2 2 1]", got)
	}
	if got := c.takeCounts(); got != nil {
		t.Fatalf("taken: %v", got)
	}
	none := newLagClock(held, 0, nil)
	none.After(0, func() {})
	held.pending[len(held.pending)-1]()
	if got := none.takeCounts(); got != nil {
		t.Fatalf("no bounds, no counts: %v", got)
	}
	for _, b := range [][]float64{{1, 5, 5}, {0, 1}, {5, 1}} {
		m := &startMsg{Devices: []startDevice{{ID: "d"}}, Wake: WakeSchedule{Mode: "off"}, Intake: intake, Timing: timing,
			TimerLagBoundsMs: b}
		if _, err := refusal(m); err == nil || !strings.Contains(err.Error(), "timer_lag_bounds_ms") {
			t.Fatalf("bounds %v: refusal %v", b, err)
		}
	}
}

// A start without the device rules of core/ is refused, naming the one missing: the engine holds none of its own.
func TestAStartWithoutRulesIsRefused(t *testing.T) {
	for _, drop := range []string{"resume_exempt_closes", "kept_session_reasons", "session_end_reasons", "number_pattern"} {
		r := rules()
		switch drop {
		case "resume_exempt_closes":
			r.ResumeExemptCloses = nil
		case "kept_session_reasons":
			r.KeptSessionReasons = nil
		case "session_end_reasons":
			r.SessionEndReasons = nil
		default:
			r.NumberPattern = ""
		}
		m := &startMsg{Devices: []startDevice{{ID: "d"}}, Wake: WakeSchedule{Mode: "off"}, Intake: intake, Timing: timing,
			Rules: *r}
		if _, err := refusal(m); err == nil || !strings.Contains(err.Error(), "rules."+drop) {
			t.Fatalf("without %s: refusal %v", drop, err)
		}
	}
}

// An unmatched message's record keeps its own copy of the text: the socket hands its read buffer back to a pool when
// OnText returns, and the record is serialized later (issue 41: k6.log showed another frame's bytes).
func TestUnmatchedRecordOutlivesTheReadBuffer(t *testing.T) {
	r := newRig(t, recommended())
	r.connect(t)
	buf := []byte(`{"type":"surprise","session_id":"s-1","x":"` + strings.Repeat("y", 200) + `"}`)
	r.net.last().h.OnText(buf)
	for i := range buf {
		buf[i] = 0xff // the pool reuses the buffer for the next read
	}
	got := r.sink.named("unmatched_messages")
	if len(got) != 1 {
		t.Fatalf("unmatched records %v", got)
	}
	if text := string(got[0].Raw); !strings.HasPrefix(text, `{"type":"surprise","session_id":"s-1"`) || len(text) != maxRawText {
		t.Fatalf("the record's text is not the message's: %q", text)
	}
}

// A traced device says which step it acted on for each text frame, in its own matching order (`wakestorm try` labels
// frames with it): the ready, a pong, a message the dialect ignores, one it does not know.
func TestTracedDeviceLabelsEachTextWithItsStep(t *testing.T) {
	r := newRig(t, recommended())
	tr := &tracer{clock: r.clock}
	r.d.env.tracer = tr
	r.connect(t)
	r.msg(map[string]any{"type": "pong", "id": 1})
	r.msg(map[string]any{"type": "llm_response", "text": "x"})
	r.msg(map[string]any{"type": "surprise"})
	var steps []string
	for _, e := range tr.take() {
		if e[2] == "step" {
			steps = append(steps, e[3].(string))
		}
	}
	if want := []string{"ready", "pong", "ignore", ""}; !slices.Equal(steps, want) {
		t.Fatalf("steps %q, want %q", steps, want)
	}
}

// The metric→phase table arrives in the start (core/device-rules.ts metric_phases): a start without it, or with a
// mode the k6 side does not know, is refused; a record's phase comes from it by name.
func TestRulesMetricPhases(t *testing.T) {
	r := rules()
	if r.phase("unplanned_drops") != phaseSteadyOnly || r.phase("response_latency") != phaseTag || r.phase("links_up") != phaseNone {
		t.Fatalf("phases from the start's table: %v", r.MetricPhases)
	}
	none := *r
	none.MetricPhases = nil
	if err := none.compile(); err == nil || !strings.Contains(err.Error(), "rules.metric_phases") {
		t.Fatalf("a start without metric_phases: %v", err)
	}
	bad := *r
	bad.MetricPhases = map[string]string{"wake_success": "sometimes"}
	if err := bad.compile(); err == nil || !strings.Contains(err.Error(), "wake_success") {
		t.Fatalf("an unknown phase mode: %v", err)
	}
	// Nothing summed in the batch may carry a phase: the table and the batch's summable counters are disjoint.
	for name := range summable {
		if r.phase(name) != phaseNone {
			t.Errorf("%s is summed by the batch but phased by the rules", name)
		}
	}
}
