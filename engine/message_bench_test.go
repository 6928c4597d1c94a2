package main

// The per-message path of an idle device (the server's JSON ping answered, the device's own ping's pong), for
// `go test -bench Message -benchmem`: what one message costs in time and allocations, on the fake socket.

import "testing"

func BenchmarkMessageIdle(b *testing.B) {
	p := recommended()
	p.Keepalive.AnswerServerPings = true
	r := newRig(&testing.T{}, p)
	r.connect(&testing.T{})
	r.d.env.Intake.MessagesPerSecond = 1 << 40 // the clock stands still here: no rate to exceed
	s := r.net.last()
	ping := []byte(`{"type":"ping","t":1733570000123}`)
	pong := []byte(`{"type":"pong","id":7,"t":1733570000123,"server_t":1733570000125}`)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.h.OnText(ping)
		s.h.OnText(pong)
		if i%1024 == 0 {
			s.sent = s.sent[:0]
			r.sink.recs = r.sink.recs[:0]
		}
	}
}
