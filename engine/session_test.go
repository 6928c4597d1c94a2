package main

// Conversations on the fake clock: the same steps and outcomes as test/unit's device-session tests.

import (
	"strings"
	"testing"
)

// testUplink is 10 frames of 20 ms: 8 voiced, then 2 silent.
func testUplink() *Uplink {
	u := &Uplink{Silence: make([]byte, 640), FrameMs: 20}
	for i := 0; i < 10; i++ {
		u.Frames = append(u.Frames, make([]byte, 640))
		u.Silent = append(u.Silent, i >= 8)
	}
	u.LastVoiced = 7
	return u
}

func talkingRig(t *testing.T, p *Profile, wake WakeSchedule) *rig {
	r := &rig{clock: newFakeClock(1_000_000), net: &fakeNet{}, sink: &memSink{}}
	env := &Env{Clock: r.clock, Net: r.net, Sink: r.sink, Token: "tok", Intake: intake, Timing: timing, Rules: rules()}
	r.d = NewDevice("dev-1", "ws://127.0.0.1:1", p, shippedDialect(t, "wakestorm"), env, "seed", wake, testUplink(),
		map[string]any{"device_id": "dev-1", "profile": p.Name, "protocol_version": 1.0})
	return r
}

func talker() *Profile {
	p := recommended()
	p.FrameBytes = 640
	p.EndOfSpeech = "explicit"
	p.PlaybackPrebufferMs = 200
	return p
}

func (m *memSink) values(name string) []float64 {
	var out []float64
	for _, r := range m.named(name) {
		out = append(out, r.Value)
	}
	return out
}

// converse: connect, wake at 1 s, ack after 30 ms, stream the utterance, and return the wake message the device sent.
func converse(t *testing.T, r *rig) string {
	t.Helper()
	r.connect(t) // 5 ms: connect 3, handshake 2
	r.clock.Advance(995)
	s := r.net.last()
	if len(s.sent) == 0 || !strings.HasPrefix(s.sent[len(s.sent)-1], `{"type":"hotword_detected","wake_id":"w-`) {
		t.Fatalf("no wake sent: %v", s.sent)
	}
	wake := s.sent[len(s.sent)-1]
	wakeID := strings.Split(strings.Split(wake, `"wake_id":"`)[1], `"`)[0]
	r.clock.Advance(30)
	r.msg(map[string]any{"type": "session_started", "session_id": "s-1", "wake_id": wakeID})
	return wake
}

func TestAConversationEndToEnd(t *testing.T) {
	r := talkingRig(t, talker(), WakeSchedule{Mode: "once", FirstMinMs: 1000, FirstMaxMs: 1000})
	converse(t, r)
	if v := r.sink.values("wake_ack_latency"); len(v) != 1 || v[0] != 30 {
		t.Fatalf("wake_ack_latency %v", v)
	}
	if v := r.sink.values("wake_success"); len(v) != 1 || v[0] != 1 {
		t.Fatalf("wake_success %v", v)
	}
	s := r.net.last()
	// The first frame goes at once, the rest at 20 ms pace: 10 frames by 180 ms, end_of_speech at 200 ms.
	if len(s.binary) != 1 {
		t.Fatalf("frames at the ack: %d", len(s.binary))
	}
	r.clock.Advance(140) // frame 7 (the last voiced) goes at 140 ms: the end of the user's speech
	r.clock.Advance(60)
	if len(s.binary) != 10 || s.sent[len(s.sent)-1] != `{"type":"end_of_speech","session_id":"s-1"}` {
		t.Fatalf("frames %d, last %s", len(s.binary), s.sent[len(s.sent)-1])
	}
	// The server answers 500 ms after the last voiced frame.
	r.clock.Advance(300)
	r.msg(map[string]any{"type": "transcript", "session_id": "s-1", "text": "hi"})
	r.msg(map[string]any{"type": "tts_stream_start", "session_id": "s-1", "bytes": 12800.0})
	for i := 0; i < 20; i++ {
		s.h.OnBinary(make([]byte, 640))
		r.clock.Advance(20)
	}
	if v := r.sink.values("response_latency"); len(v) != 1 || v[0] != 360 {
		t.Fatalf("response_latency %v (last voiced frame at +140, first audio at +500)", v)
	}
	if v := r.sink.values("endpointing_latency"); len(v) != 1 || v[0] != 360 {
		t.Fatalf("endpointing_latency %v", v)
	}
	r.msg(map[string]any{"type": "tts_stream_end", "session_id": "s-1", "bytes": 12800.0})
	r.clock.Advance(400)
	if last := s.sent[len(s.sent)-1]; last != `{"type":"playback_complete","session_id":"s-1"}` {
		t.Fatalf("no playback_complete: %s", last)
	}
	r.msg(map[string]any{"type": "session_end", "session_id": "s-1", "reason": "complete"})
	if r.sink.sum("sessions_completed") != 1 || r.sink.sum("sessions_dropped") != 0 {
		t.Fatal("not completed")
	}
	for _, m := range []string{"reply_truncated", "reply_stutter", "session_drop_rate"} {
		if v := r.sink.values(m); len(v) != 1 || v[0] != 0 {
			t.Fatalf("%s %v", m, v)
		}
	}
}

// prebufferedReply: a conversation whose reply starts 500 ms after the ack, announced as 12,800 bytes, with its first
// 200 ms (the talker's prebuffer) arriving at once.
func prebufferedReply(t *testing.T) (*rig, *fakeSocket) {
	r := talkingRig(t, talker(), WakeSchedule{Mode: "once", FirstMinMs: 1000, FirstMaxMs: 1000})
	converse(t, r)
	r.clock.Advance(500)
	s := r.net.last()
	r.msg(map[string]any{"type": "tts_stream_start", "session_id": "s-1", "bytes": 12800.0})
	for i := 0; i < 10; i++ {
		s.h.OnBinary(make([]byte, 640))
	}
	return r, s
}

func TestAShortReplyIsTruncatedAndAStutterCounted(t *testing.T) {
	r, s := prebufferedReply(t)
	// 200 ms prebuffered at once, then nothing for 300 ms: playback runs dry for 100 ms.
	r.clock.Advance(300)
	s.h.OnBinary(make([]byte, 640))
	r.msg(map[string]any{"type": "tts_stream_end", "session_id": "s-1", "bytes": 12800.0})
	if v := r.sink.values("reply_truncated"); len(v) != 1 || v[0] != 1 {
		t.Fatalf("reply_truncated %v: 7,040 of 12,800 bytes", v)
	}
	if v := r.sink.values("reply_stutter"); len(v) != 1 || v[0] != 1 {
		t.Fatalf("reply_stutter %v", v)
	}
	if r.sink.sum("playback_underruns") != 1 {
		t.Fatal("underrun not counted")
	}
}

func TestASilentServerDropsTheSessionAndAnUnansweredWakeFails(t *testing.T) {
	r := talkingRig(t, talker(), WakeSchedule{Mode: "once", FirstMinMs: 1000, FirstMaxMs: 1000})
	converse(t, r)
	r.clock.Advance(16_000)
	if r.sink.sum("sessions_dropped") != 1 || r.sink.named("sessions_dropped")[0].Reason != "timeout" {
		t.Fatalf("dropped %+v", r.sink.named("sessions_dropped"))
	}
	r2 := talkingRig(t, talker(), WakeSchedule{Mode: "once", FirstMinMs: 1000, FirstMaxMs: 1000})
	r2.connect(t)
	r2.clock.Advance(1000 + timing.WakeAckTimeoutMs)
	if v := r2.sink.values("wake_success"); len(v) != 1 || v[0] != 0 {
		t.Fatalf("wake_success %v", v)
	}
}

func TestAReplyThatNeverEndsIsAViolationAndAnOpenSessionIsJudgedAtTheEnd(t *testing.T) {
	r := talkingRig(t, talker(), WakeSchedule{Mode: "once", FirstMinMs: 1000, FirstMaxMs: 1000})
	converse(t, r)
	r.clock.Advance(500)
	s := r.net.last()
	r.msg(map[string]any{"type": "tts_stream_start", "session_id": "s-1", "bytes": 8192.0})
	for i := 0; i < 30; i++ {
		s.h.OnBinary(make([]byte, 640))
	}
	if v := r.sink.named("protocol_violations"); len(v) != 1 || v[0].Kind != "reply_overrun" {
		t.Fatalf("violations %+v", v)
	}
	r2 := talkingRig(t, talker(), WakeSchedule{Mode: "once", FirstMinMs: 1000, FirstMaxMs: 1000})
	converse(t, r2)
	r2.clock.Advance(500)
	r2.msg(map[string]any{"type": "tts_stream_start", "session_id": "s-1"})
	// Audio keeps the session alive past the stall bound; the run ends with it open: owed, dropped as timeout.
	for i := 0; i < 900; i++ {
		r2.net.last().h.OnBinary(make([]byte, 640))
		r2.clock.Advance(20)
	}
	r2.d.Stop()
	if d := r2.sink.named("sessions_dropped"); len(d) != 1 || d[0].Reason != "timeout" {
		t.Fatalf("open session at the end: %+v", d)
	}
}

func TestAWakeWhileOfflineWaitsForTheLink(t *testing.T) {
	r := talkingRig(t, talker(), WakeSchedule{Mode: "once", FirstMinMs: 0, FirstMaxMs: 0})
	r.d.Start(500)
	r.clock.Advance(500)
	if r.sink.sum("wakes") != 1 || len(r.net.sockets) != 1 {
		t.Fatal("the wake comes with the first connect")
	}
	r.net.last().h.OnOpen()
	if len(r.net.last().sent) != 0 {
		t.Fatalf("nothing is said before the link is up: %v", r.net.last().sent)
	}
	r.msg(map[string]any{"type": "connected"})
	if last := r.net.last().sent; len(last) == 0 || !strings.Contains(last[len(last)-1], "hotword_detected") {
		t.Fatalf("the held wake is sent once the link is up: %v", last)
	}
}

// xiaozhiRig: a device on the xiaozhi dialect (a channel per wake, Opus both ways) with the committed Opus utterance.
func xiaozhiRig(t *testing.T, wake WakeSchedule) *rig {
	r := &rig{clock: newFakeClock(1_000_000), net: &fakeNet{}, sink: &memSink{}}
	env := &Env{Clock: r.clock, Net: r.net, Sink: r.sink, Token: "tok", Intake: intake, Timing: timing, Rules: rules()}
	u := &Uplink{Silence: []byte{3 << 3, 0}, FrameMs: 60, LastVoiced: 2}
	for i := 0; i < 4; i++ {
		u.Frames = append(u.Frames, []byte{3 << 3, byte(i)})
		u.Silent = append(u.Silent, i == 3)
	}
	p := talker()
	p.Connect = "hello"
	vars := map[string]any{"mac": "02:00:00:00:00:01", "client_id": "c-1", "wake_word": "hey", "listen_mode": "manual"}
	dl := shippedDialect(t, "xiaozhi")
	// These tests are about the channel; the OTA check before it has its trace (xiaozhi-ota-check).
	dl.Provision = nil
	r.d = NewDevice("dev-1", "ws://127.0.0.1:1", p, dl, env, "seed", wake, u, vars)
	return r
}

func TestAChannelPerWakeOpensAtTheWakeAndClosesAfterTheReply(t *testing.T) {
	r := xiaozhiRig(t, WakeSchedule{Mode: "fixed", IntervalMs: 5000, FirstMinMs: 1000, FirstMaxMs: 1000})
	r.d.Start(0)
	r.clock.Advance(999)
	if len(r.net.sockets) != 0 {
		t.Fatal("a per-wake device connected before its wake")
	}
	r.clock.Advance(1)
	s := r.net.last()
	if s.url != "ws://127.0.0.1:1/xiaozhi/v1/" || s.headers["Device-Id"] != "02:00:00:00:00:01" ||
		s.headers["Client-Id"] != "c-1" || s.headers["Authorization"] != "Bearer tok" {
		t.Fatalf("url %s headers %v", s.url, s.headers)
	}
	r.clock.Advance(10)
	s.h.OnOpen()
	if len(s.sent) != 1 || !strings.Contains(s.sent[0], `"type":"hello"`) {
		t.Fatalf("no hello: %v", s.sent)
	}
	r.clock.Advance(15)
	r.msg(map[string]any{"type": "hello", "transport": "websocket", "session_id": "xz-1"})
	// The server's hello acknowledges the wake: the wait ran from the wake word to it.
	if v := r.sink.values("wake_ack_latency"); len(v) != 1 || v[0] != 25 {
		t.Fatalf("wake_ack_latency %v", v)
	}
	if len(s.sent) != 3 || !strings.Contains(s.sent[1], `"state":"detect","text":"hey"`) ||
		!strings.Contains(s.sent[2], `"session_id":"xz-1","type":"listen","state":"start","mode":"manual"`) {
		t.Fatalf("wake messages %v", s.sent)
	}
	r.clock.Advance(120) // frame 2 (the last voiced) at +120 ms
	r.clock.Advance(120) // then listen stop
	if len(s.binary) != 4 || !strings.Contains(s.sent[len(s.sent)-1], `"state":"stop"`) {
		t.Fatalf("frames %d, last %s", len(s.binary), s.sent[len(s.sent)-1])
	}
	r.clock.Advance(400)
	r.msg(map[string]any{"type": "stt", "text": "hey"})
	r.msg(map[string]any{"type": "tts", "state": "start"})
	// Six 60 ms Opus packets (TOC config 3): 360 ms of reply.
	for i := 0; i < 6; i++ {
		s.h.OnBinary([]byte{3 << 3, 1, 2})
		r.clock.Advance(60)
	}
	if v := r.sink.values("response_latency"); len(v) != 1 || v[0] != 520 {
		t.Fatalf("response_latency %v (last voiced at +120, first audio at +640)", v)
	}
	r.msg(map[string]any{"type": "tts", "state": "stop"})
	r.clock.Advance(400)
	if r.sink.sum("sessions_completed") != 1 || s.closed != closeNormal || r.d.state != stIdle {
		t.Fatalf("completed %v, closed %d, state %v", r.sink.sum("sessions_completed"), s.closed, r.d.state)
	}
	for _, m := range []string{"reply_truncated", "reply_stutter", "session_drop_rate"} {
		if v := r.sink.values(m); len(v) != 1 || v[0] != 0 {
			t.Fatalf("%s %v", m, v)
		}
	}
	if r.sink.sum("links_down") != 1 || r.sink.sum("unplanned_drops") != 0 || r.sink.sum("reconnect_attempts") != 0 {
		t.Fatal("a planned close was counted as a loss")
	}
	// The next wake opens a new channel.
	r.clock.Advance(5000)
	if len(r.net.sockets) != 2 {
		t.Fatalf("%d channels after the second wake", len(r.net.sockets))
	}
}

func TestAPerWakeChannelThatNeverComesUpLeavesTheWakeUnanswered(t *testing.T) {
	r := xiaozhiRig(t, WakeSchedule{Mode: "once", FirstMinMs: 1000, FirstMaxMs: 1000})
	r.d.Start(0)
	r.clock.Advance(1000)
	r.net.last().h.OnClose(closeAbnormal) // refused before the socket opened
	if v := r.sink.values("wake_success"); len(v) != 1 || v[0] != 0 {
		t.Fatalf("wake_success %v", v)
	}
	if r.sink.sum("connect_success") != 0 || len(r.sink.named("connect_success")) != 1 || r.d.state != stIdle {
		t.Fatalf("connect_success %v, state %v", r.sink.named("connect_success"), r.d.state)
	}
	r.clock.Advance(60_000)
	if len(r.net.sockets) != 1 {
		t.Fatal("a per-wake channel was reconnected without a wake")
	}
}

func TestAPerWakeChannelLostMidReplyDropsTheSession(t *testing.T) {
	r := xiaozhiRig(t, WakeSchedule{Mode: "once", FirstMinMs: 1000, FirstMaxMs: 1000})
	r.d.Start(0)
	r.clock.Advance(1000)
	r.net.last().h.OnOpen()
	r.msg(map[string]any{"type": "hello", "transport": "websocket", "session_id": "xz-1"})
	r.clock.Advance(500)
	r.msg(map[string]any{"type": "tts", "state": "start"})
	r.net.last().h.OnBinary([]byte{3 << 3})
	r.net.last().h.OnClose(closeAbnormal)
	if r.sink.sum("sessions_dropped") != 1 || r.sink.sum("reconnects_abandoned") != 1 || r.d.state != stIdle {
		t.Fatalf("dropped %v, abandoned %v", r.sink.sum("sessions_dropped"), r.sink.sum("reconnects_abandoned"))
	}
	if got := r.sink.named("unplanned_drops"); len(got) != 1 || got[0].Cause != "abnormal" {
		t.Fatalf("unplanned_drops %v", got)
	}
}

// The device observes until the run's end: what the fleet's teardown does after it (the engine and the server
// stalled by thousands of links closing at once) is not the server's, so a reply that runs dry after the end is not
// an underrun and its session is not judged by how it ends.
func TestNothingIsObservedAfterTheRunsEnd(t *testing.T) {
	run := func(endAfterPrebuffer float64) *rig {
		r, s := prebufferedReply(t)
		if endAfterPrebuffer > 0 {
			r.d.env.EndAt = r.clock.Now() + endAfterPrebuffer
		}
		r.clock.Advance(300) // 200 ms prebuffered: playback runs dry at +200, the next chunk comes at +300
		s.h.OnBinary(make([]byte, 640))
		return r
	}
	if r := run(0); r.sink.sum("playback_underruns") != 1 {
		t.Fatal("without an end the underrun is counted")
	}
	if r := run(350); r.sink.sum("playback_underruns") != 1 {
		t.Fatal("the run ending at +350: the underrun was seen before the end")
	}
	r := run(250)
	if r.sink.sum("playback_underruns") != 0 {
		t.Fatal("the run ending at +250, the chunk at +300: not observed")
	}
	r.msg(map[string]any{"type": "session_end", "session_id": "s-1", "reason": "complete"})
	if len(r.sink.named("sessions_completed")) != 0 || len(r.sink.named("reply_stutter")) != 0 {
		t.Fatal("a session that ends after the run's end is not judged by its end")
	}
}

// What the end found is judged as of the end, even when the stop comes later (the fleet's stops take a few hundred
// ms at 10,000 devices): a device still waiting to reconnect is judged by its wait until the end.
func TestTheEndIsJudgedAsOfTheRunsEnd(t *testing.T) {
	p := recommended()
	p.Reconnect = Backoff{Policy: "fixed", BaseMs: 60_000, CapMs: 60_000, On: "abnormal"}
	for _, c := range []struct{ endAfterLoss, stopAfterLoss, judged float64 }{
		{11_000, 11_300, 11_000}, // judged: waited 11 s at the end, not 11.3
		{9_500, 10_500, 0},       // unfinished: 9.5 s at the end is under the censor bound (10 s)
	} {
		r := newRig(t, p)
		r.connect(t)
		r.net.last().h.OnClose(closeAbnormal)
		r.d.env.EndAt = r.clock.Now() + c.endAfterLoss
		r.clock.Advance(c.stopAfterLoss)
		r.d.Stop()
		rt := r.sink.named("reconnect_time")
		if c.judged > 0 && (len(rt) != 1 || rt[0].Value != c.judged) {
			t.Fatalf("end %v ms after the loss: reconnect_time %+v, want %v", c.endAfterLoss, rt, c.judged)
		}
		if c.judged == 0 && (len(rt) != 0 || r.sink.sum("reconnects_unfinished") != 1) {
			t.Fatalf("end %v ms after the loss: %+v, want unfinished", c.endAfterLoss, rt)
		}
	}
}
