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
	env := &Env{Clock: r.clock, Net: r.net, Sink: r.sink, Token: "tok", Intake: intake}
	r.d = NewDevice("dev-1", "ws://127.0.0.1:1", p, shippedDialect(t, "wakestorm"), env, "seed", wake, testUplink())
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
		s.h.OnBinary(640)
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

func TestAShortReplyIsTruncatedAndAStutterCounted(t *testing.T) {
	r := talkingRig(t, talker(), WakeSchedule{Mode: "once", FirstMinMs: 1000, FirstMaxMs: 1000})
	converse(t, r)
	r.clock.Advance(500)
	s := r.net.last()
	r.msg(map[string]any{"type": "tts_stream_start", "session_id": "s-1", "bytes": 12800.0})
	// 200 ms prebuffered at once, then nothing for 300 ms: playback runs dry for 100 ms.
	for i := 0; i < 10; i++ {
		s.h.OnBinary(640)
	}
	r.clock.Advance(300)
	s.h.OnBinary(640)
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
	r2.clock.Advance(1000 + wakeAckTimeoutMs)
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
		s.h.OnBinary(640)
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
		r2.net.last().h.OnBinary(640)
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
