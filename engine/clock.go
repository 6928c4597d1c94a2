package main

// The engine's clock and timers: monotonic time in milliseconds on the wall clock's scale (k6 tags a sample's phase by
// comparing it with the chaos timeline's wall-clock windows), and one-shot timers. Tests use a fake clock.

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Clock is what a device reads time from and sets timers on.
type Clock interface {
	// Now is milliseconds since the Unix epoch, advanced by the monotonic clock.
	Now() float64
	// After calls fn after ms; the returned function cancels it (true when it had not fired).
	After(ms float64, fn func()) func() bool
}

type realClock struct{ base time.Time }

func newRealClock() *realClock { return &realClock{base: time.Now()} }

func (c *realClock) Now() float64 {
	return float64(c.base.UnixNano())/1e6 + float64(time.Since(c.base).Nanoseconds())/1e6
}

func (c *realClock) After(ms float64, fn func()) func() bool {
	if ms < 0 {
		ms = 0
	}
	t := time.AfterFunc(time.Duration(ms*float64(time.Millisecond)), fn)
	return t.Stop
}

// fakeClock runs timers in order when advanced, on the caller's goroutine.
type fakeClock struct {
	mu     sync.Mutex
	now    float64
	seq    int
	timers map[int]fakeTimer
}

type fakeTimer struct {
	at  float64
	seq int
	fn  func()
}

func newFakeClock(start float64) *fakeClock {
	return &fakeClock{now: start, timers: map[int]fakeTimer{}}
}

func (c *fakeClock) Now() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(ms float64, fn func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	id := c.seq
	c.timers[id] = fakeTimer{at: c.now + max(ms, 0), seq: id, fn: fn}
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		_, ok := c.timers[id]
		delete(c.timers, id)
		return ok
	}
}

// Advance moves time forward by ms, firing every timer due on the way in order.
func (c *fakeClock) Advance(ms float64) {
	c.mu.Lock()
	end := c.now + ms
	c.mu.Unlock()
	for {
		c.mu.Lock()
		var next *fakeTimer
		for _, t := range c.timers {
			if t.at <= end && (next == nil || t.at < next.at || (t.at == next.at && t.seq < next.seq)) {
				tt := t
				next = &tt
			}
		}
		if next == nil {
			c.now = end
			c.mu.Unlock()
			return
		}
		delete(c.timers, next.seq)
		c.now = next.at
		c.mu.Unlock()
		next.fn()
	}
}

// lagClock measures how late its timers fire: the engine's own scheduling lag, reported with every batch. Like the
// devices (Device.observing), it observes until the run's end (endAt, 0: none): a timer due after it is not
// measured, and one that fires after it counts as late as the end only.
type lagClock struct {
	Clock
	endAt     float64
	maxMicros atomic.Int64
	// bounds are the upper bounds (ms) of the buckets firings are counted in (core/timer-lag.ts); counts has one more,
	// for the rest.
	bounds []float64
	counts []atomic.Int64
}

// newLagClock counts firings per bucket only when given bounds: with none, a batch carries no counts (one bucket of
// everything would read on the k6 side as the first bound's).
func newLagClock(c Clock, endAt float64, bounds []float64) *lagClock {
	l := &lagClock{Clock: c, endAt: endAt, bounds: bounds}
	if len(bounds) > 0 {
		l.counts = make([]atomic.Int64, len(bounds)+1)
	}
	return l
}

func (c *lagClock) After(ms float64, fn func()) func() bool {
	due := c.Now() + max(ms, 0)
	return c.Clock.After(ms, func() {
		fired := c.Now()
		if c.endAt > 0 {
			if due >= c.endAt {
				fn()
				return
			}
			fired = min(fired, c.endAt)
		}
		late := int64((fired - due) * 1000)
		if c.counts != nil {
			i, _ := slices.BinarySearch(c.bounds, float64(late)/1000)
			c.counts[i].Add(1)
		}
		for {
			cur := c.maxMicros.Load()
			if late <= cur || c.maxMicros.CompareAndSwap(cur, late) {
				break
			}
		}
		fn()
	})
}

// takeMaxMs is the latest any timer fired since the last call, in ms.
func (c *lagClock) takeMaxMs() float64 { return float64(c.maxMicros.Swap(0)) / 1000 }

// takeCounts is how many timers fired in each bucket since the last call; nil when none did.
func (c *lagClock) takeCounts() []int64 {
	var out []int64
	for i := range c.counts {
		if n := c.counts[i].Swap(0); n > 0 {
			if out == nil {
				out = make([]int64, len(c.counts))
			}
			out[i] = n
		}
	}
	return out
}
