package main

// Audio besides Opus, ported from core/audio-codec.ts: the committed 16 kHz PCM at 8, 24 or 48 kHz by one integer
// rule (linear interpolation, floored), G.711 µ-law, base64 inside JSON (framing "json"), and how long a downlink
// chunk plays by its length. The trace corpus pins both engines to the same bytes.

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"regexp"
)

const pcmRate = 16000

func floorDiv(a, b int) int {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// resamplePcm is 16 kHz PCM s16le at rate: sample j is the source at j·16000/rate, linearly interpolated, floored.
func resamplePcm(pcm []byte, rate int) []byte {
	if rate == pcmRate {
		return pcm
	}
	n := len(pcm) / 2
	m := n * rate / pcmRate
	out := make([]byte, m*2)
	for j := 0; j < m; j++ {
		num := j * pcmRate
		i := num / rate
		rem := num - i*rate
		a := int(int16(binary.LittleEndian.Uint16(pcm[i*2:])))
		b := a
		if i+1 < n {
			b = int(int16(binary.LittleEndian.Uint16(pcm[(i+1)*2:])))
		}
		binary.LittleEndian.PutUint16(out[j*2:], uint16(int16(a+floorDiv((b-a)*rem, rate))))
	}
	return out
}

// ulawSegEnd is the top of each µ-law segment on the 14-bit magnitude plus bias (core twin, Sun's g711.c).
var ulawSegEnd = [8]int{0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff}

// mulawByte is one linear sample as G.711 µ-law, as the reference g711.c encodes it (14 bits, bias 33, clip 8159).
func mulawByte(sample int) byte {
	v := sample >> 2
	mask := 0xff
	if v < 0 {
		v, mask = -v, 0x7f
	}
	v = min(v, 8159) + 33
	seg := 0
	for seg < 8 && v > ulawSegEnd[seg] {
		seg++
	}
	if seg >= 8 {
		return byte(0x7f ^ mask)
	}
	return byte(((seg << 4) | ((v >> (seg + 1)) & 0x0f)) ^ mask)
}

func mulawEncode(pcm []byte) []byte {
	out := make([]byte, len(pcm)/2)
	for i := range out {
		out[i] = mulawByte(int(int16(binary.LittleEndian.Uint16(pcm[i*2:]))))
	}
	return out
}

// encodeSpeech is 16 kHz PCM in a dialect's PCM or µ-law at its rate.
func encodeSpeech(pcm []byte, codec string, rate int) []byte {
	out := resamplePcm(pcm, rate)
	if codec == "mulaw" {
		return mulawEncode(out)
	}
	return out
}

// bytesPerMs of PCM (two bytes a sample) or µ-law (one) at rate.
func bytesPerMs(codec string, rate float64) float64 {
	if codec == "mulaw" {
		return rate / 1000
	}
	return 2 * rate / 1000
}

var base64Shape = regexp.MustCompile(`^[A-Za-z0-9+/]*={0,2}$`)

// base64Length is how many bytes a base64 text decodes to, without decoding it; false when it is not base64's shape.
func base64Length(s string) (int, bool) {
	if len(s)%4 != 0 || !base64Shape.MatchString(s) {
		return 0, false
	}
	pad := 0
	if len(s) >= 2 && s[len(s)-2:] == "==" {
		pad = 2
	} else if len(s) >= 1 && s[len(s)-1] == '=' {
		pad = 1
	}
	return len(s)/4*3 - pad, true
}

func toBase64(b []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(b)) }

// audioSentinel stands for the frame while an uplink audio message is rendered once per stream (core twin).
const audioSentinel = "@@wakestorm-audio-frame@@"

// wire is how this uplink's frames go out for a device with vars: binary as they are (json false), or inside the
// dialect's audio message, pre + base64 frame + post.
func (u *Uplink) wire(vars *Vars) (pre, post []byte, json bool) {
	if u.JSON == nil {
		return nil, nil, false
	}
	vars.Set("audio", audioSentinel)
	msg := u.JSON.Render(vars)
	vars.Delete("audio")
	i := bytes.Index(msg, []byte(audioSentinel))
	if i < 0 {
		return msg, nil, true
	}
	return msg[:i], msg[i+len(audioSentinel):], true
}
