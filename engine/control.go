package main

// The control socket: k6 drives the engine as its browser module drives Chromium. A k6 VU opens a WebSocket to
// /control, sends `start` with its slice of the fleet (device ids, target URLs, profiles, dialects, seed), and gets a
// `batch` of records every second until it sends `stop` (or goes away), then a final `stopped`.

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

type startDevice struct {
	ID      string  `json:"id"`
	URL     string  `json:"url"`
	Profile int     `json:"profile"`
	Dialect string  `json:"dialect"`
	DelayMs float64 `json:"delay_ms"`
	// Vars are the device's own wire variables (core/device-env.ts deviceVars: mac, client_id, listen_mode, …).
	Vars map[string]any `json:"vars"`
}

type startMsg struct {
	Type             string                     `json:"type"`
	Devices          []startDevice              `json:"devices"`
	Profiles         []*Profile                 `json:"profiles"`
	Dialects         map[string]json.RawMessage `json:"dialects"`
	Token            string                     `json:"token"`
	Seed             string                     `json:"seed"`
	ConnectTimeoutMs float64                    `json:"connect_timeout_ms"`
	Intake           Intake                     `json:"intake"`
	Timing           Timing                     `json:"timing"`
	Rules            Rules                      `json:"rules"`
	// Trace: send every frame the devices send and receive, and their log lines, beside the records, every traceEvery
	// (`wakestorm try`; trace.go). At most maxTracedDevices devices.
	Trace bool `json:"trace"`
	// TLS: how a wss:// device link is verified when the devices reach the server through Toxiproxy (the URL names
	// the proxy, ServerName the server: its SNI and the name its certificate must hold). The roots are the process's
	// (SSL_CERT_FILE: the CLI's --ca). Insecure skips verification (--insecure-tls, shown in the report).
	TLS TLSOptions `json:"tls"`
	// ProvisionURL: the base of the dialects' provision calls (core/run-config.ts provisionUrl); "": the target.
	ProvisionURL string       `json:"provision_url"`
	Wake         WakeSchedule `json:"wake"`
	Audio        struct {
		// PCMPath is the utterance (16 kHz 16-bit mono PCM); Silent, per frame size, which of its frames an energy VAD
		// hears as silence (core/audio-frames.ts decides, the engine does not judge audio itself).
		PCMPath string            `json:"pcm_path"`
		Silent  map[string][]bool `json:"silent"`
		// OpusPath is the committed Opus packets of the same utterance, Opus their frame table (core/opus.ts).
		OpusPath string     `json:"opus_path"`
		Opus     *opusTable `json:"opus"`
	} `json:"audio"`
	// EndInMs bounds the session: the engine stops these devices by itself this long after start (plus grace).
	EndInMs float64 `json:"end_in_ms"`
	// EndAt is the run's end on the wall clock, as the engine's clock counts (Unix ms): its devices observe until then.
	EndAt float64 `json:"end_at"`
	// TimerLagBoundsMs are the buckets the engine counts its timers' lag in (core/timer-lag.ts); none: not counted.
	TimerLagBoundsMs []float64 `json:"timer_lag_bounds_ms"`
}

// capabilities is what this engine can run (`wakestorm-engine --capabilities`): the CLI refuses anything else in one
// line before the run, and a start asking for anything else is refused here.
var capabilities = struct {
	Version   string   `json:"version"`
	Wake      []string `json:"wake"`
	Lifecycle []string `json:"lifecycle"`
	// Audio is the codec/framing pairs it streams, up and down.
	Audio []string `json:"audio"`
}{
	engineVersion,
	[]string{"off", "once", "poisson", "fixed"},
	[]string{"persistent", "per_wake"},
	[]string{
		"pcm_s16le/raw", "pcm_s16le/xiaozhi-v2", "pcm_s16le/xiaozhi-v3", "pcm_s16le/json",
		"mulaw/raw", "mulaw/xiaozhi-v2", "mulaw/xiaozhi-v3", "mulaw/json",
		"opus/raw", "opus/xiaozhi-v2", "opus/xiaozhi-v3",
	},
}

// flushEvery is how often records go to k6.
const flushEvery = time.Second

// maxBatch bounds one batch's records: a server cannot make the engine or k6 buffer without end.
const maxBatch = 200_000

// maxTracedDevices bounds a traced start: a trace is for a person reading frames, not for a fleet.
const maxTracedDevices = 16

// maxDevicesPerSession bounds one start message.
const maxDevicesPerSession = 100_000

type control struct {
	net   Net
	clock Clock
}

var upgrader = websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 4096}

func (c *control) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/health" {
		_, _ = w.Write([]byte(`{"status":"ok"}`))
		return
	}
	if r.URL.Path != "/control" {
		http.NotFound(w, r)
		return
	}
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c.session(conn)
}

// refusal is the one line the engine answers a start it cannot run.
func ascending(b []float64) bool {
	for i := 1; i < len(b); i++ {
		if !(b[i] > b[i-1]) {
			return false
		}
	}
	return true
}

func refusal(m *startMsg) (map[string]*Dialect, error) {
	if len(m.Devices) == 0 || len(m.Devices) > maxDevicesPerSession {
		return nil, fmt.Errorf("a start names 1 to %d devices, got %d", maxDevicesPerSession, len(m.Devices))
	}
	if m.Trace && len(m.Devices) > maxTracedDevices {
		return nil, fmt.Errorf("a traced start names at most %d devices, got %d", maxTracedDevices, len(m.Devices))
	}
	if !slices.Contains(capabilities.Wake, m.Wake.Mode) {
		return nil, fmt.Errorf("the native engine does not run wake schedule %q: use --engine k6", m.Wake.Mode)
	}
	if m.Intake.MessagesPerSecond <= 0 || m.Intake.TextBytes <= 0 || m.Intake.BinaryBytes <= 0 || m.Intake.JSONDepth <= 0 {
		return nil, fmt.Errorf("start has no intake bounds")
	}
	if m.Intake.UnsentBytes != maxWriteBuffer {
		return nil, fmt.Errorf("start's intake.unsentBytes %d is not the engine's socket bound %d", m.Intake.UnsentBytes, maxWriteBuffer)
	}
	if f := m.Timing.missing(); f != "" {
		return nil, fmt.Errorf("start has no timing.%s (a positive number)", f)
	}
	if b := m.TimerLagBoundsMs; len(b) > 64 || len(b) > 0 && !(b[0] > 0) || !ascending(b) {
		return nil, fmt.Errorf("start's timer_lag_bounds_ms must be at most 64 ascending positive numbers")
	}
	if err := m.Rules.compile(); err != nil {
		return nil, err
	}
	dialects := map[string]*Dialect{}
	for name, raw := range m.Dialects {
		d, err := ParseDialect(raw)
		if err != nil {
			return nil, fmt.Errorf("dialect %s: %v", name, err)
		}
		if !slices.Contains(capabilities.Lifecycle, d.Lifecycle) {
			return nil, fmt.Errorf("dialect %s: the native engine does not run lifecycle %q: use --engine k6", name, d.Lifecycle)
		}
		for _, a := range []AudioSpec{d.Audio.Up, d.Audio.Down} {
			if talks := m.Wake.Mode != "off" && m.Wake.Mode != ""; talks && !slices.Contains(capabilities.Audio, a.Codec+"/"+a.Framing) {
				return nil, fmt.Errorf("dialect %s: the native engine streams %v audio only, not %s/%s yet: use --engine k6", name, capabilities.Audio, a.Codec, a.Framing)
			}
		}
		dialects[name] = d
	}
	for _, dv := range m.Devices {
		if dv.Profile < 0 || dv.Profile >= len(m.Profiles) || m.Profiles[dv.Profile] == nil {
			return nil, fmt.Errorf("device %s: no profile %d", dv.ID, dv.Profile)
		}
		if dialects[dv.Dialect] == nil {
			return nil, fmt.Errorf("device %s: no dialect %q", dv.ID, dv.Dialect)
		}
	}
	return dialects, nil
}

func (c *control) session(conn *websocket.Conn) {
	defer func() { _ = conn.Close() }()
	conn.SetReadLimit(64 << 20)
	var wmu sync.Mutex
	write := func(b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		_ = conn.SetWriteDeadline(time.Now().Add(30 * time.Second))
		return conn.WriteMessage(websocket.TextMessage, b)
	}
	fail := func(err error) {
		b, _ := json.Marshal(map[string]string{"type": "error", "message": "wakestorm-engine: " + err.Error()})
		_ = write(b)
	}
	_, data, err := conn.ReadMessage()
	if err != nil {
		return
	}
	received := c.clock.Now()
	var m startMsg
	if err := json.Unmarshal(data, &m); err != nil || m.Type != "start" {
		fail(fmt.Errorf("the first control message must be a start: %v", err))
		return
	}
	sink := newBatch(maxBatch)
	// The run's end as k6 counts it, on the wall clock both read (relative to the start's arrival if k6 gave none).
	endAt := m.EndAt
	if endAt <= 0 && m.EndInMs > 0 {
		endAt = received + m.EndInMs
	}
	clock := newLagClock(c.clock, endAt, m.TimerLagBoundsMs)
	net := c.net
	if w, ok := net.(*wsNet); ok {
		net = w.withTLS(m.TLS)
	}
	env := &Env{Clock: clock, Net: net, Sink: sink, EndAt: endAt}
	every := flushEvery
	if m.Trace {
		env.tracer = &tracer{clock: c.clock}
		every = traceEvery
	}
	devices, err := buildDevices(&m, env)
	if err != nil {
		fail(err)
		return
	}
	for i, dv := range m.Devices {
		devices[i].Start(dv.DelayMs)
	}
	// The devices copied what they need from their entries; the start stays alive for the session (env.Rules points
	// into it), so the list is let go here: 10,000 entries with their variables' maps were ~5 MB of the live heap.
	m.Devices = nil
	b, _ := json.Marshal(map[string]any{"type": "started", "devices": len(devices)})
	if write(b) != nil {
		stopAll(devices)
		return
	}
	stopped := make(chan struct{})
	go func() {
		// The control socket's reader: `stop`, or the socket gone (k6 ended or died).
		for {
			_, data, err := conn.ReadMessage()
			if err != nil {
				break
			}
			var msg struct{ Type string }
			if json.Unmarshal(data, &msg) == nil && msg.Type == "stop" {
				break
			}
		}
		close(stopped)
	}()
	bound := time.Duration(math.Max(m.EndInMs, 0)+30_000) * time.Millisecond
	deadline := time.NewTimer(bound)
	defer deadline.Stop()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			framesSent(devices, sink)
			recs, dropped := sink.take()
			if write(marshalBatch(recs, dropped, connectedBy(devices), clock.takeMaxMs(), clock.takeCounts(),
				false, env.takeTrace())) != nil {
				stopAll(devices)
				return
			}
		case <-stopped:
			stopAll(devices)
			framesSent(devices, sink)
			recs, dropped := sink.take()
			_ = write(marshalBatch(recs, dropped, connectedBy(devices), 0, clock.takeCounts(), true, env.takeTrace()))
			return
		case <-deadline.C:
			stopAll(devices)
			return
		}
	}
}

// buildDevices makes the start's devices on env (its clock, network, sink and end; the rest comes from the start),
// after refusing a start the engine cannot run. The control socket and the trace replay (replay.go) share it.
func buildDevices(m *startMsg, env *Env) ([]*Device, error) {
	dialects, err := refusal(m)
	if err != nil {
		return nil, err
	}
	uplinks, err := loadUplinks(m, dialects)
	if err != nil {
		return nil, err
	}
	env.Token, env.ConnectTimeoutMs, env.Intake, env.Timing, env.Rules = m.Token, m.ConnectTimeoutMs, m.Intake, m.Timing,
		&m.Rules
	env.ProvisionURL = m.ProvisionURL
	devices := make([]*Device, len(m.Devices))
	for i, dv := range m.Devices {
		p, dl := m.Profiles[dv.Profile], dialects[dv.Dialect]
		u := uplinks[uplinkKey(dl.Audio.Up, p.FrameBytes)]
		e := env
		if env.tracer != nil {
			// Each traced device gets its own view of the network and its own log, named by its id.
			own := *env
			own.Net = &traceNet{inner: env.Net, t: env.tracer, dev: dv.ID}
			own.Log = func(line string) { env.tracer.add(dv.ID, "log", line) }
			e = &own
		}
		devices[i] = NewDevice(dv.ID, dv.URL, p, dl, e, m.Seed, m.Wake, u, dv.Vars)
	}
	return devices, nil
}

func stopAll(devices []*Device) {
	for _, d := range devices {
		d.Stop()
	}
}

func connectedBy(devices []*Device) map[string]int {
	m := map[string]int{}
	for _, d := range devices {
		if _, ok := m[d.profile.Name]; !ok {
			m[d.profile.Name] = 0
		}
		if d.Connected() {
			m[d.profile.Name]++
		}
	}
	return m
}

// framesSent reports the uplink frames sent since the last batch, as one audio_frames count (the slips' denominator).
func framesSent(devices []*Device, sink Sink) {
	n := 0
	for _, d := range devices {
		n += d.TakeFramesSent()
	}
	if n > 0 {
		sink.Add(Record{Name: "audio_frames", Value: float64(n)})
	}
}
