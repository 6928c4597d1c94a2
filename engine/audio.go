package main

// Audio as a device sends and plays it, ported from core/dialect.ts (frameAudio, unframeAudio) and core/opus.ts
// (opusClip, opusPacketMs): the utterance cut into uplink frames in the dialect's codec and framing, and the duration
// of a downlink message (PCM by its bytes, an Opus packet by its TOC byte, RFC 6716 section 3.1) without decoding it.

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
)

// opusTable is audio/<name>.opus.json (core/opus.ts OpusTable): packet sizes back to back, then one silence packet.
type opusTable struct {
	FrameMs     float64 `json:"frame_ms"`
	Sizes       []int   `json:"sizes"`
	Silent      []bool  `json:"silent"`
	SilenceSize int     `json:"silence_size"`
}

// framingHead is the header length of a framing: BinaryProtocol2 16 bytes, BinaryProtocol3 4, raw none.
func framingHead(framing string) int {
	switch framing {
	case "xiaozhi-v2":
		return 16
	case "xiaozhi-v3":
		return 4
	}
	return 0
}

// frameAudio wraps one payload in the dialect's framing (timestampMs is BinaryProtocol2's timestamp field).
func frameAudio(framing string, payload []byte, timestampMs float64) []byte {
	head := framingHead(framing)
	if head == 0 {
		return payload
	}
	out := make([]byte, head+len(payload))
	if framing == "xiaozhi-v2" {
		binary.BigEndian.PutUint16(out[0:], 2)
		binary.BigEndian.PutUint32(out[8:], uint32(int64(timestampMs)))
		binary.BigEndian.PutUint32(out[12:], uint32(len(payload)))
	} else {
		binary.BigEndian.PutUint16(out[2:], uint16(len(payload)))
	}
	copy(out[head:], payload)
	return out
}

// unframeAudio is the payload of one binary message in the dialect's framing; false when the header does not hold.
func unframeAudio(framing string, buf []byte) ([]byte, bool) {
	head := framingHead(framing)
	if head == 0 {
		return buf, true
	}
	if len(buf) < head {
		return nil, false
	}
	var size int
	if framing == "xiaozhi-v2" {
		size = int(binary.BigEndian.Uint32(buf[12:]))
	} else {
		size = int(binary.BigEndian.Uint16(buf[2:]))
	}
	if size > len(buf)-head {
		return nil, false
	}
	return buf[head : head+size], true
}

// configTenths is a frame's length in 0.1 ms by TOC config (RFC 6716 table 2).
var configTenths = [32]int{
	100, 200, 400, 600, 100, 200, 400, 600, 100, 200, 400, 600, 100, 200, 100, 200,
	25, 50, 100, 200, 25, 50, 100, 200, 25, 50, 100, 200, 25, 50, 100, 200,
}

// opusPacketMs is how long one Opus packet plays, from its TOC byte and frame count code; 0 for a malformed packet.
func opusPacketMs(p []byte) float64 {
	if len(p) < 1 {
		return 0
	}
	toc := p[0]
	frames := 1
	switch toc & 3 {
	case 1, 2:
		frames = 2
	case 3:
		if len(p) < 2 {
			return 0
		}
		frames = int(p[1] & 0x3f)
	}
	ms := float64(frames*configTenths[toc>>3]) / 10
	if ms > 120 {
		return 0
	}
	return ms
}

// downlinkMs is how long one downlink message plays in the dialect's audio, and its payload's bytes; false when the
// framing does not hold together (the message is not audio).
func downlinkMs(a AudioSpec, msg []byte) (float64, int, bool) {
	payload, ok := unframeAudio(a.Framing, msg)
	if !ok {
		return 0, 0, false
	}
	if a.Codec == "opus" {
		return opusPacketMs(payload), len(payload), true
	}
	return float64(len(payload)) / bytesPerMs(a.Codec, a.SampleRate), len(payload), true
}

// uplinkKey names one uplink layout: codec, framing and (for PCM) the profile's frame size.
func uplinkKey(a AudioSpec, frameBytes int) string {
	if a.Codec == "opus" {
		return "opus/" + a.Framing
	}
	return a.Codec + "/" + a.Framing + "/" + strconv.Itoa(int(a.SampleRate)) + "/" + strconv.Itoa(frameBytes)
}

// loadUplinks cuts the utterance into every layout the run's devices send (the silent flags come with the start:
// core/audio-frames.ts decides, the engine does not judge audio); none when the run has no wakes.
func loadUplinks(m *startMsg, dialects map[string]*Dialect) (map[string]*Uplink, error) {
	out := map[string]*Uplink{}
	if m.Wake.Mode == "off" || m.Wake.Mode == "" {
		return out, nil
	}
	var pcm, opus []byte
	for _, dv := range m.Devices {
		a, p := dialects[dv.Dialect].Audio.Up, m.Profiles[dv.Profile]
		key := uplinkKey(a, p.FrameBytes)
		if out[key] != nil {
			continue
		}
		var u *Uplink
		var err error
		if a.Codec == "opus" {
			if opus == nil {
				if opus, err = readAudio(m.Audio.OpusPath, "Opus packets"); err != nil {
					return nil, err
				}
			}
			u, err = opusUplink(opus, m.Audio.Opus, a.Framing)
		} else {
			if pcm == nil {
				if pcm, err = readAudio(m.Audio.PCMPath, "utterance"); err != nil {
					return nil, err
				}
			}
			u, err = pcmUplink(pcm, m.Audio.Silent[strconv.Itoa(p.FrameBytes)], p.FrameBytes, a)
		}
		if err != nil {
			return nil, fmt.Errorf("profile %s: %v", p.Name, err)
		}
		if a.Framing == "json" {
			u.JSON = a.Message
		}
		out[key] = u
	}
	return out, nil
}

func readAudio(path, what string) ([]byte, error) {
	if path == "" {
		return nil, fmt.Errorf("the start names no %s file", what)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the %s: %v", what, err)
	}
	return b, nil
}

// pcmUplink cuts the 16 kHz utterance into fb-byte frames, each in the dialect's codec, rate and framing.
func pcmUplink(pcm []byte, silent []bool, fb int, a AudioSpec) (*Uplink, error) {
	if fb <= 0 || fb%2 != 0 || silent == nil {
		return nil, fmt.Errorf("no uplink layout for %d-byte frames", fb)
	}
	frameMs := float64(fb) / pcmBytesPerMs
	same := a.Codec == "pcm_s16le" && int(a.SampleRate) == pcmRate
	wrap := func(b []byte, i int) []byte {
		if !same {
			b = encodeSpeech(b, a.Codec, int(a.SampleRate))
		}
		if a.Framing == "json" {
			return toBase64(b)
		}
		return frameAudio(a.Framing, b, float64(i)*frameMs)
	}
	u := &Uplink{Silence: wrap(make([]byte, fb), 0), FrameMs: frameMs}
	for off := 0; off+fb <= len(pcm); off += fb {
		u.Frames = append(u.Frames, wrap(pcm[off:off+fb], len(u.Frames)))
	}
	if len(silent) != len(u.Frames) {
		return nil, fmt.Errorf("%d silent flags for %d frames of the utterance", len(silent), len(u.Frames))
	}
	u.setSilent(silent)
	return u, nil
}

func opusUplink(file []byte, t *opusTable, framing string) (*Uplink, error) {
	if t == nil || t.FrameMs <= 0 || len(t.Silent) != len(t.Sizes) {
		return nil, fmt.Errorf("no Opus frame table")
	}
	total := t.SilenceSize
	for _, n := range t.Sizes {
		total += n
	}
	if total != len(file) || t.SilenceSize < 0 {
		return nil, fmt.Errorf("Opus table (%d bytes) does not match its packet file (%d bytes)", total, len(file))
	}
	u := &Uplink{FrameMs: t.FrameMs}
	off := 0
	for i, n := range t.Sizes {
		if n < 0 {
			return nil, fmt.Errorf("Opus table has a negative packet size")
		}
		u.Frames = append(u.Frames, frameAudio(framing, file[off:off+n], float64(i)*t.FrameMs))
		off += n
	}
	u.Silence = frameAudio(framing, file[off:], 0)
	u.setSilent(t.Silent)
	return u, nil
}

func (u *Uplink) setSilent(silent []bool) {
	u.Silent, u.LastVoiced = silent, -1
	for i, s := range silent {
		if !s {
			u.LastVoiced = i
		}
	}
}
