package main

// Framings and Opus timing against the committed audio (audio/utterance.opus, made by libopus): the same rules as
// core/dialect.ts and core/opus.ts.

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

func TestFramingsRoundTrip(t *testing.T) {
	payload := []byte{1, 2, 3, 4, 5}
	for _, f := range []string{"raw", "xiaozhi-v2", "xiaozhi-v3"} {
		framed := frameAudio(f, payload, 120)
		if len(framed) != framingHead(f)+len(payload) {
			t.Fatalf("%s: %d bytes", f, len(framed))
		}
		got, ok := unframeAudio(f, framed)
		if !ok || !bytes.Equal(got, payload) {
			t.Fatalf("%s: %v %v", f, got, ok)
		}
		if f != "raw" {
			if _, ok := unframeAudio(f, framed[:len(framed)-1]); ok {
				t.Fatalf("%s: a header longer than its message was accepted", f)
			}
		}
	}
	v2 := frameAudio("xiaozhi-v2", payload, 120)
	if v2[1] != 2 || v2[11] != 120 || v2[15] != 5 {
		t.Fatalf("BinaryProtocol2 header %v", v2[:16])
	}
}

func TestOpusPacketDurationsFromTheTOC(t *testing.T) {
	cases := map[string]struct {
		p  []byte
		ms float64
	}{
		"SILK 60 ms, one frame":     {[]byte{3 << 3, 0}, 60},
		"CELT 20 ms, two frames":    {[]byte{31<<3 | 1, 0}, 40},
		"CELT 2.5 ms, code 3 x 4":   {[]byte{16<<3 | 3, 4}, 10},
		"code 3 past 120 ms":        {[]byte{3<<3 | 3, 3}, 0},
		"empty packet":              {nil, 0},
		"code 3 without its count":  {[]byte{3<<3 | 3}, 0},
		"hybrid 20 ms, one frame":   {[]byte{13 << 3}, 20},
		"SILK 10 ms, two (code 2)":  {[]byte{0<<3 | 2, 0}, 20},
		"CELT 20 ms, code 3 x 6 ok": {[]byte{31<<3 | 3, 6}, 120},
	}
	for name, c := range cases {
		if got := opusPacketMs(c.p); got != c.ms {
			t.Errorf("%s: %v ms, want %v", name, got, c.ms)
		}
	}
}

func TestTheCommittedOpusUtteranceLoads(t *testing.T) {
	file, err := os.ReadFile("../audio/utterance.opus")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../audio/utterance.opus.json")
	if err != nil {
		t.Fatal(err)
	}
	var table opusTable
	if err := json.Unmarshal(raw, &table); err != nil {
		t.Fatal(err)
	}
	u, err := opusUplink(file, &table, "xiaozhi-v3")
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Frames) != len(table.Sizes) || u.FrameMs != 60 || u.LastVoiced < 0 || u.Silent[u.LastVoiced] {
		t.Fatalf("%d frames, %v ms, last voiced %d", len(u.Frames), u.FrameMs, u.LastVoiced)
	}
	// Every packet the encoder made plays one 60 ms frame, read back through the framing as a server would.
	for i, f := range append(u.Frames, u.Silence) {
		ms, _, ok := downlinkMs(AudioSpec{Codec: "opus", Framing: "xiaozhi-v3"}, f)
		if !ok || ms != 60 {
			t.Fatalf("packet %d: %v ms", i, ms)
		}
	}
	if _, err := opusUplink(file[1:], &table, "raw"); err == nil {
		t.Fatal("a packet file that does not match its table was accepted")
	}
}
