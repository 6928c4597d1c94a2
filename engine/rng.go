package main

// Seeded random numbers as core/rng.ts makes them: one mulberry32 stream per device from the seed and the device id,
// so a device's backoff jitter is the same whichever engine runs it.

import (
	"math"
	"unicode/utf16"
)

// hash32 is FNV-1a over the string's UTF-16 code units (JS charCodeAt).
func hash32(s string) uint32 {
	h := uint32(0x811c9dc5)
	for _, c := range utf16.Encode([]rune(s)) {
		h ^= uint32(c)
		h *= 0x01000193
	}
	return h
}

// mulberry32 returns numbers in [0, 1).
func mulberry32(seed uint32) func() float64 {
	a := seed
	return func() float64 {
		a += 0x6d2b79f5
		t := a
		t = (t ^ (t >> 15)) * (t | 1)
		t ^= t + (t^(t>>7))*(t|61)
		return float64(t^(t>>14)) / 4294967296
	}
}

// deviceRandom is core/rng.ts deviceRandom: the stream of `${seed}:${deviceId}`.
func deviceRandom(seed, deviceID string) func() float64 {
	return mulberry32(hash32(seed + ":" + deviceID))
}

// Backoff is core/backoff.ts: the delay before each reconnect try; reset after a successful connect.
type Backoff struct {
	Policy      string   `json:"policy"`
	BaseMs      float64  `json:"base_ms"`
	CapMs       float64  `json:"cap_ms"`
	MaxAttempts int      `json:"max_attempts"`
	FirstMs     *float64 `json:"first_ms"`
	JitterMs    float64  `json:"jitter_ms"`
	On          string   `json:"on"`
}

type backoff struct {
	spec   *Backoff
	random func() float64
	prev   float64
}

func newBackoff(s *Backoff, r func() float64) *backoff {
	return &backoff{spec: s, random: r, prev: s.BaseMs}
}

func (b *backoff) reset() { b.prev = b.spec.BaseMs }

// next is the delay in ms before try number attempt (1-based) after a loss.
func (b *backoff) next(attempt int) float64 {
	s := b.spec
	if attempt == 1 && s.FirstMs != nil {
		return b.withJitter(math.Min(s.CapMs, *s.FirstMs))
	}
	exp := math.Min(s.CapMs, s.BaseMs*math.Pow(2, float64(min(attempt-1, 30))))
	var d float64
	switch s.Policy {
	case "fixed":
		d = math.Min(s.CapMs, s.BaseMs)
	case "exponential":
		d = exp
	case "full-jitter":
		d = b.random() * exp
	case "equal-jitter":
		d = exp/2 + b.random()*(exp/2)
	case "decorrelated-jitter":
		d = math.Min(s.CapMs, s.BaseMs+b.random()*(b.prev*3-s.BaseMs))
		b.prev = d
	}
	return b.withJitter(d)
}

func (b *backoff) withJitter(d float64) float64 {
	j := 0.0
	if b.spec.JitterMs > 0 {
		j = b.random() * b.spec.JitterMs
	}
	return math.Round(d + j)
}
