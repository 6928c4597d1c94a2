package main

// A device's conversations, as core/device-session.ts runs them on k6: the wake schedule, the wake said the dialect's
// way (or held until the link is up), its acknowledgement judged, the utterance streamed at real-time pace, the end of
// speech, the reply played back through a jitter-buffer model timed by the audio's duration, and how each session
// ended, on a persistent link or a channel per wake; every method runs under the device's lock.

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
)

// pcmBytesPerMs: 16 kHz, 16-bit mono.
const pcmBytesPerMs = 32

// Timing is the device's bounds and windows, sent with the start from the constants of core/ (engine-fleet.ts), so
// that each is written once: the same numbers judge a device on either engine.
type Timing struct {
	// SessionStallMs: a session that hears nothing this long has stalled (core/device-session.ts SESSION_STALL_MS).
	SessionStallMs float64 `json:"session_stall_ms"`
	// BargeInWaitMs: how long a barge-in waits for the server to stop the reply.
	BargeInWaitMs float64 `json:"barge_in_wait_ms"`
	// VadMaxTrailingMs: trailing silence a VAD-ended stream sends at most while it waits for the server's end.
	VadMaxTrailingMs       float64 `json:"vad_max_trailing_ms"`
	PlaybackGapToleranceMs float64 `json:"playback_gap_tolerance_ms"`
	MaxReplyAudioMs        float64 `json:"max_reply_audio_ms"`
	OverrunSlackBytes      float64 `json:"overrun_slack_bytes"`
	SlipAfterFrames        float64 `json:"slip_after_frames"`
	// WakeAckTimeoutMs is core/verdict.ts WAKE_ACK_TIMEOUT_MS.
	WakeAckTimeoutMs float64 `json:"wake_ack_timeout_ms"`
	// ResumeGraceMs is the protocol's resume grace (core/protocol.ts DEFAULTS.resume_grace_ms).
	ResumeGraceMs float64 `json:"resume_grace_ms"`
	// LateAudioGraceMs is core/device-session.ts LATE_AUDIO_GRACE_MS: reply audio this long after its session ended is
	// still that reply's; later, with no session, it is a violation (binary_outside_session).
	LateAudioGraceMs float64 `json:"late_audio_grace_ms"`
	// EndDueMs is core/verdict.ts END_DUE_MS: at the run's end, a wake or an end of speech older than this still
	// unanswered was owed its answer; only younger ones are open at the end.
	EndDueMs float64 `json:"end_due_ms"`
	// ReconnectCensorMs is core/verdict.ts RECONNECT_CENSOR_MS: a wait this long at the end is judged.
	ReconnectCensorMs float64 `json:"reconnect_censor_ms"`
	// FlapMs: a link lost sooner than this after it came up is a flap (core/device-link.ts FLAP_MS).
	FlapMs float64 `json:"flap_ms"`
	// KeepaliveGridMs: keepalive and silence-check timers fire at the end of a slot of this grid (core/device-link.ts
	// KEEPALIVE_GRID_MS).
	KeepaliveGridMs float64 `json:"keepalive_grid_ms"`
}

// missing names the first bound the start left out (each is positive).
func (t Timing) missing() string {
	v := reflect.ValueOf(t)
	for i := 0; i < v.NumField(); i++ {
		if f := v.Field(i).Float(); !(f > 0) || math.IsInf(f, 0) {
			return v.Type().Field(i).Tag.Get("json")
		}
	}
	return ""
}

// WakeSchedule is core/device-env.ts WakeSchedule.
type WakeSchedule struct {
	Mode       string  `json:"mode"`
	IntervalMs float64 `json:"interval_ms"`
	FirstMinMs float64 `json:"first_min_ms"`
	FirstMaxMs float64 `json:"first_max_ms"`
}

// Uplink is the utterance cut into one profile's frames, with the frames an energy VAD hears as silent (computed by
// core/audio-frames.ts on the k6 side and sent with the start).
type Uplink struct {
	Frames     [][]byte
	Silent     []bool
	LastVoiced int
	Silence    []byte
	FrameMs    float64
	// JSON is the message a frame rides in (framing "json": Frames hold base64 text); nil for binary frames.
	JSON *Template
}

type session struct {
	wakeID, id                    string
	hasID                         bool
	wakeAt, turnAt, heardAt       float64
	eosAt, endpointedAt           float64
	hasEos, endpointed, responded bool
	heardEnd                      bool // a transcript (the dialect's sign of hearing) came after the end of speech
	stage                         string
	frame                         int
	silenceSentMs, streamT0       float64
	pbReceivedMs, pbStartedAt     float64
	pbStarted                     bool
	bargeAt, lastStaleAt          float64
	barging, stale                bool
	replyAt                       float64
	hasReply                      bool
	replyBytes                    int
	replyAnnounced                float64
	hasAnnounced                  bool
	replyStalls                   int
	replyStallMs                  float64
	replyJudged                   bool
}

// name is the session's id as a log line says it ("null" before the server gave one, as core/device-session.ts).
func (s *session) name() string {
	if !s.hasID {
		return "null"
	}
	return s.id
}

type pendingWake struct {
	wakeID string
	at     float64
}

type conversation struct {
	d           *Device
	wake        WakeSchedule
	uplink      *Uplink
	s           *session
	pending     *pendingWake
	judge       *pendingWake
	followUp    bool
	linkSession string
	framesSent  int
	// turns counts the device's wakes and follow-ups: their ids are w-<n>-<device id> (core/device-session.ts).
	turns        uint64
	lastLossCode int
	lastLossAt   float64
	hadLoss      bool
	// endedAt is when the last session ended (reply audio after it is still that reply's for LateAudioGraceMs);
	// -Inf before the first, as in device-session.ts.
	endedAt float64
}

func (c *conversation) now() float64 { return c.d.now() }

func (c *conversation) next() uint64 {
	c.turns++
	return c.turns - 1
}

func (c *conversation) span(name string, v, from, to float64) {
	c.d.rec(Record{Name: name, Value: v, From: from, To: to})
}

func (c *conversation) say(t *Template) {
	if t != nil && c.d.state == stConnected && c.d.ws != nil {
		c.d.ws.Send(t.Render(&c.d.vars))
	}
}

// start schedules the first wake delayMs plus the schedule's first wake window after the device starts.
func (c *conversation) start(delayMs float64) {
	w := c.wake
	if w.Mode == "off" || w.Mode == "" {
		return
	}
	first := delayMs + w.FirstMinMs + c.d.random()*math.Max(0, w.FirstMaxMs-w.FirstMinMs)
	c.d.setTimer("wake", first, c.wakeNow)
}

// answeredEarly: the server answered before the user's speech ended (an early reply: judged then, never timed).
func (s *session) answeredEarly() bool {
	return s.endpointed && (!s.hasEos || s.endpointedAt < s.eosAt)
}

// replyOverdue: the session's speech ended more than due ms before at and no reply has begun.
func (s *session) replyOverdue(at, due float64) bool {
	return !s.responded && s.hasEos && !s.answeredEarly() && at-s.eosAt >= due
}

// stop judges a session still open at the run's end (core/device-session.ts stop): owed when its turn began more than
// the stall bound ago; owing its reply when its speech ended more than EndDueMs ago; open at the end otherwise. A
// wake is open at the end only if younger than EndDueMs.
func (c *conversation) stop() {
	s := c.s
	at := c.d.judgedAt()
	due := c.d.env.Timing.EndDueMs
	switch {
	case s == nil || !s.hasID:
	case at-s.turnAt >= c.d.env.Timing.SessionStallMs:
		c.d.log("session " + s.name() + " still open at the end, " + text(at-s.turnAt) + " ms after it began")
		c.d.rec(Record{Name: "sessions_dropped", Value: 1, Reason: "timeout"})
		c.span("session_drop_rate", 1, s.wakeAt, at)
	case s.replyOverdue(at, due):
		c.d.log("session " + s.name() + " had no reply at the end, " + text(at-s.eosAt) + " ms after its speech ended")
	case !s.answeredEarly():
		// Cut by the run's end before it owed an outcome: neither lost nor waiting for a reply that never came.
		c.d.count("sessions_open_at_end", 1)
	}
	// A wake still waiting for its acknowledgement: the end came first, not the server's answer (unless it was due).
	if c.judge != nil && at-c.judge.at < due {
		c.d.count("wakes_open_at_end", 1)
	} else if c.judge != nil {
		c.d.log("wake " + c.judge.wakeID + " unacknowledged at the end after " + text(at-c.judge.at) + " ms")
	}
	c.judge = nil
	c.s = nil
}

func (c *conversation) takeFramesSent() int {
	n := c.framesSent
	c.framesSent = 0
	return n
}

func (c *conversation) busy() bool { return c.s != nil || c.pending != nil }

func str(v any) (string, bool) {
	s, ok := v.(string)
	return s, ok && s != ""
}

func (c *conversation) linkUp() {
	vars := &c.d.vars
	s := c.s
	c.linkSession, _ = str(vars.Get("session_id"))
	c.followUp = false
	if s != nil {
		resumed := vars.Get("resumed") == true
		if s.hasID {
			c.judgeResume(resumed)
		}
		if rs, _ := str(vars.Get("resumed_session")); s.hasID && resumed && rs == s.id {
			c.d.count("sessions_resumed", 1)
			s.pbReceivedMs, s.pbStarted = 0, false
			st, _ := str(vars.Get("resumed_stage"))
			if st == "thinking" || st == "speaking" {
				s.stage = st
			} else {
				s.stage = "listening"
			}
			c.watchStall(s)
		} else if s.hasID {
			c.sessionOver("lost")
		} else {
			c.pending = &pendingWake{s.wakeID, s.wakeAt}
			c.s = nil
		}
	}
	if c.pending != nil && c.s == nil {
		c.sendWake(c.pending.wakeID, c.pending.at)
	}
	c.pending = nil
}

// judgeResume: the server owes a resume after a cut (not 1001 or 1012) within the protocol's grace.
func (c *conversation) judgeResume(resumed bool) {
	if !c.hadLoss || c.d.env.Rules.resumeExempt(c.lastLossCode) {
		return
	}
	if c.now()-c.lastLossAt > c.d.env.Timing.ResumeGraceMs {
		return
	}
	v := 0.0
	if resumed {
		v = 1
	} else if s := c.s; s != nil {
		c.d.log("session " + s.name() + " not resumed " + text(c.now()-c.lastLossAt) + " ms after the loss")
	}
	c.d.rec(Record{Name: "resume_success", Value: v})
}

func (c *conversation) linkLost(code int, wasConnected, final bool) {
	if wasConnected {
		c.hadLoss, c.lastLossCode, c.lastLossAt = true, code, c.now()
	}
	c.followUp = false
	c.d.clearTimer("audio")
	c.d.clearTimer("stall")
	perWake := c.d.perWake()
	if perWake && c.pending != nil {
		// The channel a wake opened never came up: that wake goes unanswered.
		c.wakeJudged(c.pending.wakeID, false)
		c.pending = nil
		c.scheduleNextWakeIfRepeating()
	}
	// A session survives a lost link only where the dialect and profile resume and the device will come back.
	resumes := c.d.dialect.Resume && c.d.profile.Resume && !perWake
	if c.s != nil && (final || perWake || (wasConnected && !resumes)) {
		c.sessionOver("lost")
	}
	if final {
		c.d.clearTimer("wake")
	}
}

// message takes a server message that is not the link's own; false when no step of the conversation took it.
// message acts on a server message in the conversation; it returns the step it took ("" when none).
func (c *conversation) message(msg map[string]any) string {
	if n, isAudio, ok := c.d.dialect.jsonAudio(msg, &c.d.vars); isAudio {
		a := c.d.dialect.Audio.Down
		c.replyAudio(float64(n)/bytesPerMs(a.Codec, a.SampleRate), n, ok)
		return "audio"
	}
	s := c.s
	if s == nil {
		return ""
	}
	dl, vars := c.d.dialect, &c.d.vars
	if !s.hasID {
		if dl.Recv.Ack != nil && dl.Recv.Ack.Matches(msg, vars) {
			dl.Capture["ack"].Apply(msg, vars)
			c.acknowledged(s)
			return "ack"
		}
		return ""
	}
	now := c.now()
	step := ""
	switch {
	case dl.Recv.Transcript != nil && dl.Recv.Transcript.Matches(msg, vars):
		step = "transcript"
		s.heardAt = now
		if s.hasEos {
			s.heardEnd = true
		}
		if s.stage == "listening" || s.stage == "thinking" {
			c.endpointed(s, now)
		}
		if s.stage == "listening" {
			s.stage = "thinking"
		}
		c.d.clearTimer("audio")
	case dl.Recv.ReplyStart.Matches(msg, vars):
		step = "reply_start"
		dl.Capture["reply_start"].Apply(msg, vars)
		c.replyStarts(s, now)
	case dl.Recv.ReplyEnd.Matches(msg, vars):
		step = "reply_end"
		s.heardAt = now
		if s.barging {
			reason := "barged_in"
			if dl.Recv.SessionEnd != nil {
				reason = ""
			}
			c.bargeOver(s, reason)
			return step
		}
		dl.Capture["reply_end"].Apply(msg, vars)
		if end, ok := c.d.env.Rules.number(vars.Get("reply_bytes")); ok {
			s.replyAnnounced, s.hasAnnounced = math.Max(end, s.replyAnnounced), true
		}
		if !s.hasReply {
			s.replyAt, s.hasReply = now, true
		}
		c.judgeReply(s, now)
		c.schedulePlaybackDone(s)
	case dl.Recv.SessionEnd != nil && dl.Recv.SessionEnd.Matches(msg, vars):
		step = "session_end"
		s.heardAt = now
		if s.barging {
			c.recordBargeIn(s)
		}
		dl.Capture["session_end"].Apply(msg, vars)
		r := "complete"
		if v, ok := vars.Lookup("reason"); ok && v != nil {
			r = text(v)
		}
		r = c.d.env.Rules.endReason(r)
		c.sessionOver(r)
	case dl.Recv.Error != nil && dl.Recv.Error.Matches(msg, vars):
		step = "error"
		s.heardAt = now
		dl.Capture["error"].Apply(msg, vars)
		c.d.rec(Record{Name: "protocol_errors", Value: 1, ErrorCode: vars.Get("error_code")})
	default:
		return ""
	}
	return step
}

// replyStarts: the reply begins (the dialect's reply_start, or with none its first audio): speaking, judged afresh (a
// resumed session replays it from its start).
func (c *conversation) replyStarts(s *session, now float64) {
	s.heardAt = now
	if s.stage == "listening" || s.stage == "thinking" {
		c.endpointed(s, now)
	}
	s.stage = "speaking"
	s.pbReceivedMs, s.pbStarted = 0, false
	s.replyAt, s.hasReply, s.replyBytes = now, true, 0
	s.replyAnnounced, s.hasAnnounced = c.d.env.Rules.number(c.d.vars.Get("reply_bytes"))
	s.replyStalls, s.replyStallMs, s.replyJudged = 0, 0, false
	c.d.clearTimer("audio")
	c.d.clearTimer("playback")
}

func (c *conversation) endpointed(s *session, now float64) {
	if s.endpointed {
		return
	}
	s.endpointedAt, s.endpointed = now, true
	if !s.hasEos {
		// The server answered before the device's last voiced frame: it cut the user off, and nobody waited for this
		// answer. No latency is timed for the session; it counts as an early reply, with how far into the speech.
		speech := 0
		if c.uplink != nil {
			speech = c.uplink.LastVoiced + 1
		}
		sent := min(s.frame, speech)
		pct := 0.0
		if speech > 0 {
			pct = float64(sent) / float64(speech) * 100
		}
		c.span("early_replies", 1, s.turnAt, now)
		c.span("early_reply_speech", pct, s.turnAt, now)
		c.d.log(fmt.Sprintf("session %s answered after %d of %d speech frames", s.name(), sent, speech))
		return
	}
	c.span("endpointing_latency", now-s.eosAt, s.eosAt, now)
}

func (c *conversation) judgeReply(s *session, now float64) {
	if s.replyJudged || !s.hasReply || s.barging {
		return
	}
	s.replyJudged = true
	short := s.replyBytes == 0 || (s.hasAnnounced && float64(s.replyBytes) < s.replyAnnounced)
	b := func(x bool) float64 {
		if x {
			return 1
		}
		return 0
	}
	c.span("reply_truncated", b(short), s.replyAt, now)
	c.span("reply_stutter", b(s.replyStalls > 0), s.replyAt, now)
	c.span("playback_stall_time", s.replyStallMs, s.replyAt, now)
}

// binary is reply audio in binary frames, timed by what it plays (PCM and µ-law by their bytes, an Opus packet by
// its TOC).
func (c *conversation) binary(msg []byte) {
	a := c.d.dialect.Audio.Down
	if a.Framing == "json" {
		c.replyAudio(0, 0, false)
		return
	}
	ms, n, ok := downlinkMs(a, msg)
	c.replyAudio(ms, n, ok)
}

// replyAudio is reply audio of ms milliseconds and n payload bytes (ok false: a message that is not audio after
// all): the first chunk after the end of speech is the response; playback is modelled in real time.
func (c *conversation) replyAudio(ms float64, n int, ok bool) {
	s := c.s
	now := c.now()
	if s == nil {
		// Audio with no conversation to play it in: the server's, not a late frame of the last reply.
		if now-c.endedAt > c.d.env.Timing.LateAudioGraceMs {
			c.d.violation("binary_outside_session")
		}
		return
	}
	// A dialect with no reply_start: the first reply audio of a session that is listening or thinking starts it.
	if c.d.dialect.Recv.ReplyStart == nil && s.hasID && (s.stage == "listening" || s.stage == "thinking") {
		c.replyStarts(s, now)
	}
	if s.stage != "speaking" {
		return
	}
	s.heardAt = now
	if s.barging {
		s.lastStaleAt, s.stale = now, true
		c.d.count("barge_in_late_frames", 1)
		return
	}
	if !s.responded {
		c.endpointed(s, now)
	}
	if !s.responded && s.hasEos {
		c.span("response_latency", now-s.eosAt, s.eosAt, now)
		if s.endpointed {
			c.span("processing_latency", now-s.endpointedAt, s.endpointedAt, now)
		}
		s.responded = true
		if b := c.d.profile.BargeInMs; b != nil {
			c.d.setTimer("playback", *b, func() { c.bargeIn(s) })
		}
	}
	if !ok {
		return
	}
	s.replyBytes += n
	if s.hasAnnounced && float64(s.replyBytes) > s.replyAnnounced+c.d.env.Timing.OverrunSlackBytes {
		c.d.violation("reply_overrun")
		return
	}
	if s.pbReceivedMs+ms > c.d.env.Timing.MaxReplyAudioMs {
		c.d.violation("reply_too_long")
		return
	}
	if !s.pbStarted {
		s.pbReceivedMs += ms
		if s.pbReceivedMs >= c.d.profile.PlaybackPrebufferMs {
			s.pbStartedAt, s.pbStarted = now, true
		}
		return
	}
	dry := now - s.pbStartedAt - s.pbReceivedMs
	if dry > 0 {
		if dry > c.d.env.Timing.PlaybackGapToleranceMs {
			c.d.count("playback_underruns", 1)
			s.replyStalls++
			s.replyStallMs += dry
		}
		s.pbStartedAt = now - s.pbReceivedMs
	}
	s.pbReceivedMs += ms
}

func (c *conversation) schedulePlaybackDone(s *session) {
	now := c.now()
	if !s.pbStarted {
		s.pbStartedAt, s.pbStarted = now, true
	}
	remaining := math.Max(0, s.pbReceivedMs-(now-s.pbStartedAt))
	c.d.setTimer("playback", remaining, func() {
		if c.s != s || !s.hasID {
			return
		}
		c.say(c.d.dialect.Send.PlaybackDone)
		if c.d.dialect.Recv.SessionEnd == nil {
			c.sessionOver("complete")
		}
	})
}

func (c *conversation) bargeIn(s *session) {
	if c.s != s || s.stage != "speaking" || s.barging {
		return
	}
	s.bargeAt, s.barging = c.now(), true
	c.d.count("barge_ins", 1)
	c.say(c.d.dialect.Send.Abort)
	c.d.setTimer("barge", c.d.env.Timing.BargeInWaitMs, func() { c.bargeOver(s, "cancelled") })
}

func (c *conversation) recordBargeIn(s *session) {
	if !s.barging {
		return
	}
	last := s.bargeAt
	if s.stale {
		last = s.lastStaleAt
	}
	c.d.trend("barge_in_stop_time", last-s.bargeAt)
	s.barging = false
	c.d.clearTimer("barge")
}

func (c *conversation) bargeOver(s *session, reason string) {
	if c.s != s {
		return
	}
	c.recordBargeIn(s)
	if reason != "" {
		c.sessionOver(reason)
	}
}

func (c *conversation) sessionOver(reason string) {
	s := c.s
	c.endedAt = c.now()
	if s != nil && reason == "complete" {
		c.judgeReply(s, c.now())
	}
	c.s = nil
	for _, t := range []string{"audio", "playback", "barge", "stall"} {
		c.d.clearTimer(t)
	}
	c.d.vars.Delete("session_id")
	c.d.vars.Delete("wake_id")
	// After a turn the user ended or heard out, a profile in auto mode listens on; otherwise a per-wake channel closes
	// with its conversation.
	listening := s != nil && s.hasID && (reason == "complete" || reason == "barged_in" || reason == "cancelled") &&
		c.listenAgain()
	if !listening {
		c.d.closeChannel()
	}
	if s == nil || !s.hasID {
		return
	}
	if reason == "complete" {
		c.d.count("sessions_completed", 1)
	}
	// Answered, yet the server never showed it heard the speech end (no transcript after it, where the dialect has
	// one): a reply to something other than what the user said. An early reply was counted as such already.
	if reason == "complete" && c.d.dialect.Recv.Transcript != nil && !s.heardEnd && !s.answeredEarly() {
		c.span("replies_unheard", 1, s.turnAt, c.now())
		c.d.log("session " + s.name() + " was answered with no transcript after its speech ended")
	}
	dropped := c.d.env.Rules.dropped(reason)
	v := 0.0
	if dropped {
		v = 1
		c.d.rec(Record{Name: "sessions_dropped", Value: 1, Reason: reason})
	}
	c.span("session_drop_rate", v, s.wakeAt, c.now())
	c.scheduleNextWakeIfRepeating()
}

// listenAgain: after_reply 'listen' says the dialect's listen and streams silence until the user speaks again.
func (c *conversation) listenAgain() bool {
	d := c.d
	if d.profile.AfterReply != "listen" || d.state != stConnected || d.ws == nil {
		return false
	}
	c.followUp = true
	if c.linkSession != "" {
		d.vars.Set("session_id", c.linkSession)
	}
	c.say(d.dialect.Send.Listen)
	u := c.uplink
	send := c.sender(u)
	t0 := c.now()
	k := 0
	var step func()
	step = func() {
		if !c.followUp || c.s != nil || d.state != stConnected || d.ws == nil {
			return
		}
		send(u.Silence)
		c.framesSent++
		k++
		d.setTimer("audio", c.frameDelay(&t0, k, u.FrameMs, c.now()), step)
	}
	d.setTimer("audio", u.FrameMs, step)
	return true
}

func (c *conversation) followUpTurn() {
	now := c.now()
	c.followUp = false
	c.d.clearTimer("audio")
	c.d.count("follow_ups", 1)
	s := c.newSession(clip64(fmt.Sprintf("f-%s-%s", strconv.FormatUint(c.next(), 36), c.d.id)), now)
	c.s = s
	id := c.linkSession
	if id == "" {
		id = s.wakeID
	}
	c.beginTurn(s, id, now)
}

func clip64(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}

func (c *conversation) scheduleNextWakeIfRepeating() {
	if c.wake.Mode == "poisson" || c.wake.Mode == "fixed" {
		c.scheduleNextWake()
	}
}

func (c *conversation) scheduleNextWake() {
	gap := c.wake.IntervalMs
	if c.wake.Mode == "poisson" {
		gap = -math.Log(1-c.d.random()) * c.wake.IntervalMs
	}
	c.d.setTimer("wake", gap, c.wakeNow)
}

func (c *conversation) alive() bool {
	st := c.d.state
	return st != stStopped && st != stGaveUp && st != stClosed
}

func (c *conversation) wakeNow() {
	d := c.d
	if !c.alive() {
		return
	}
	if c.s != nil || (d.perWake() && c.pending != nil) {
		// The user is mid-turn: a real user does not say the wake word again. Try later.
		if c.wake.Mode != "once" {
			c.scheduleNextWake()
		}
		return
	}
	up := d.state == stConnected && d.ws != nil
	if c.followUp && up {
		c.followUpTurn()
		return
	}
	d.count("wakes", 1)
	wakeID := clip64(fmt.Sprintf("w-%s-%s", strconv.FormatUint(c.next(), 36), d.id))
	at := c.now()
	if c.judge != nil {
		c.wakeJudged(c.judge.wakeID, false)
	}
	c.judge = &pendingWake{wakeID, at}
	d.setTimer("wakeAck", c.d.env.Timing.WakeAckTimeoutMs, func() { c.wakeUnanswered(wakeID) })
	if up {
		c.sendWake(wakeID, at)
	} else {
		c.pending = &pendingWake{wakeID, at}
		// The firmware opens its channel when it hears the wake word.
		d.open()
	}
}

func (c *conversation) wakeUnanswered(wakeID string) {
	c.wakeJudged(wakeID, false)
	s := c.s
	if s == nil || s.wakeID != wakeID || s.hasID {
		return
	}
	c.s = nil
	c.endedAt = c.now()
	c.d.closeChannel()
	c.scheduleNextWakeIfRepeating()
}

func (c *conversation) wakeJudged(wakeID string, ok bool) {
	w := c.judge
	if w == nil || w.wakeID != wakeID {
		return
	}
	c.judge = nil
	c.d.clearTimer("wakeAck")
	if ok {
		c.span("wake_success", 1, w.at, c.now())
	} else {
		c.span("wake_success", 0, w.at, w.at+c.d.env.Timing.WakeAckTimeoutMs)
	}
}

func (c *conversation) sendWake(wakeID string, at float64) {
	d := c.d
	if d.state != stConnected || d.ws == nil {
		return
	}
	s := c.newSession(wakeID, at)
	c.s = s
	d.vars.Set("wake_id", wakeID)
	d.vars.Set("now", math.Floor(at))
	for i := range d.dialect.Send.Wake {
		c.say(&d.dialect.Send.Wake[i])
	}
	if d.dialect.Recv.AckIsReady {
		c.acknowledged(s)
	} else if d.dialect.Recv.Ack == nil {
		// A server that acknowledges nothing: the wake reached it (wake_success), the conversation starts now, and no
		// wake_ack_latency is owed (wakes_without_ack).
		c.d.count("wakes_without_ack", 1)
		c.wakeJudged(s.wakeID, true)
		c.beginTurn(s, s.wakeID, c.now())
	}
}

func (c *conversation) newSession(wakeID string, at float64) *session {
	return &session{wakeID: wakeID, wakeAt: at, stage: "waking", turnAt: at}
}

func (c *conversation) acknowledged(s *session) {
	now := c.now()
	c.span("wake_ack_latency", now-s.wakeAt, s.wakeAt, now)
	c.wakeJudged(s.wakeID, true)
	id, ok := str(c.d.vars.Get("session_id"))
	if !ok {
		id = s.wakeID
	}
	c.beginTurn(s, id, now)
}

func (c *conversation) beginTurn(s *session, id string, now float64) {
	s.id, s.hasID = id, true
	c.d.vars.Set("session_id", id)
	s.stage = "listening"
	c.d.count("sessions_started", 1)
	s.heardAt, s.turnAt = now, now
	c.watchStall(s)
	c.startAudio()
}

func (c *conversation) watchStall(s *session) {
	var check func()
	check = func() {
		if c.s != s {
			return
		}
		quiet := c.now() - s.heardAt
		t := c.d.timers
		busy := t.get("audio") != nil || t.get("playback") != nil || t.get("barge") != nil
		if busy || quiet < c.d.env.Timing.SessionStallMs {
			c.d.setTimer("stall", math.Max(1000, c.d.env.Timing.SessionStallMs-quiet), check)
			return
		}
		c.d.log("session " + s.name() + " heard nothing from the server for " + text(c.d.env.Timing.SessionStallMs) + " ms")
		c.sessionOver("timeout")
	}
	c.d.setTimer("stall", c.d.env.Timing.SessionStallMs, check)
}

// sender sends one uplink frame on the device's socket: binary as it is, or inside the dialect's audio message
// (rendered once for this stream with the device's variables).
func (c *conversation) sender(u *Uplink) func(f []byte) {
	d := c.d
	pre, post, isJSON := u.wire(&d.vars)
	if !isJSON {
		return func(f []byte) { d.ws.SendBinary(f) }
	}
	return func(f []byte) {
		msg := make([]byte, 0, len(pre)+len(f)+len(post))
		d.ws.Send(append(append(append(msg, pre...), f...), post...))
	}
}

// startAudio streams the utterance at real-time pace, then ends speech the profile's way.
func (c *conversation) startAudio() {
	s := c.s
	d := c.d
	if s == nil {
		return
	}
	u := c.uplink
	send := c.sender(u)
	explicit := d.profile.EndOfSpeech == "explicit"
	eos := d.dialect.Send.EndOfSpeech
	slipAfter := c.d.env.Timing.SlipAfterFrames * u.FrameMs
	s.streamT0 = c.now()
	s.frame = 0
	var step func()
	step = func() {
		if c.s != s || s.stage != "listening" || d.state != stConnected || d.ws == nil {
			return
		}
		now := c.now()
		i := s.frame
		switch {
		case i < len(u.Frames):
			send(u.Frames[i])
			c.framesSent++
			if i == u.LastVoiced && !s.hasEos {
				s.eosAt, s.hasEos = now, true
			}
		case explicit:
			if eos != nil {
				d.ws.Send(eos.Render(&d.vars))
			}
			if !s.hasEos {
				s.eosAt, s.hasEos = now, true
			}
			s.stage = "thinking"
			return
		default:
			if s.silenceSentMs >= c.d.env.Timing.VadMaxTrailingMs {
				return
			}
			send(u.Silence)
			c.framesSent++
			s.silenceSentMs += u.FrameMs
		}
		s.frame = i + 1
		due := s.streamT0 + float64(s.frame)*u.FrameMs
		if now-due > slipAfter {
			s.streamT0 = now - float64(s.frame)*u.FrameMs
			due = now
			d.count("audio_slips", 1)
		}
		d.setTimer("audio", math.Max(0, due-now), step)
	}
	step()
}

// frameDelay: how long until frame k of a real-time stream whose clock started at t0; more than 3 frames late slips.
func (c *conversation) frameDelay(t0 *float64, k int, frameMs, now float64) float64 {
	due := *t0 + float64(k)*frameMs
	if now-due <= c.d.env.Timing.SlipAfterFrames*frameMs {
		return math.Max(0, due-now)
	}
	*t0 = now - float64(k)*frameMs
	c.d.count("audio_slips", 1)
	return 0
}
