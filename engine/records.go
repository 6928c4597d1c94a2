package main

// What the engine hands k6: records of the device metrics (core/metric-names.ts names), batched. Labels that follow a
// rule written once in TypeScript (close-code ranges, bounded message types, chaos phases) are made on the k6 side
// from the raw fields here.

import (
	"encoding/json"
	"sync"
)

// How the k6 side treats a record's [From, To] span: set from the start's rules.metric_phases (Rules.phase).
const (
	phaseNone       = 0
	phaseTag        = 1 // tagged chaos:steady|during|recovery by the span
	phaseSteadyOnly = 2 // counted only when the span is in steady state
)

// Record is one sample, or one event the k6 side turns into samples (names starting with _).
type Record struct {
	Name    string
	Value   float64
	Profile string
	From    float64
	To      float64
	Phase   int
	Code    int
	Cause   string
	Kind    string
	Type    any
	Raw     []byte
	// Reason is a dropped session's reason; ErrorCode what a server's error message said (labelled on the k6 side).
	Reason    string
	ErrorCode any
}

// maxRawText bounds the text of an unmatched message a record keeps (the k6 side prints it once per type).
const maxRawText = 160

// Sink takes a device's records.
type Sink interface{ Add(r Record) }

// batch collects records between flushes: counters without a span summed by key, everything else kept in order.
type batch struct {
	mu       sync.Mutex
	sums     map[sumKey]float64
	order    []sumKey
	items    []Record
	maxItems int
	dropped  int
}

type sumKey struct {
	name, profile, cause, kind, reason string
	code                               int
}

// summable: counters whose tags do not depend on a span (k6 Counter adds are commutative).
var summable = map[string]bool{
	"links_up": true, "links_down": true, "reconnect_attempts": true, "flaps": true, "reconnects_abandoned": true,
	"devices_gave_up": true, "reconnects_unfinished": true, "connection_drops": true,
	"wakes": true, "sessions_started": true, "sessions_completed": true, "sessions_dropped": true,
	"sessions_resumed": true, "playback_underruns": true, "audio_slips": true, "barge_ins": true,
	"barge_in_late_frames": true, "follow_ups": true, "audio_frames": true,
}

func newBatch(maxItems int) *batch { return &batch{sums: map[sumKey]float64{}, maxItems: maxItems} }

func (b *batch) Add(r Record) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if summable[r.Name] && r.Phase == phaseNone {
		k := sumKey{r.Name, r.Profile, r.Cause, r.Kind, r.Reason, r.Code}
		if _, ok := b.sums[k]; !ok {
			b.order = append(b.order, k)
		}
		b.sums[k] += r.Value
		return
	}
	if len(b.items) >= b.maxItems {
		// Bounded whatever the server does: past the cap a batch drops samples and says how many.
		b.dropped++
		return
	}
	b.items = append(b.items, r)
}

// wireRecord is a record on the control socket: [name, value, profile, from, to, phase, extra].
type wireRecord [7]any

// take empties the batch into its wire form.
func (b *batch) take() (recs []wireRecord, dropped int) {
	b.mu.Lock()
	sums, order, items, dropped := b.sums, b.order, b.items, b.dropped
	b.sums, b.order, b.items, b.dropped = map[sumKey]float64{}, nil, nil, 0
	b.mu.Unlock()
	recs = make([]wireRecord, 0, len(order)+len(items))
	for _, k := range order {
		recs = append(recs, wireRecord{k.name, sums[k], k.profile, 0, 0, phaseNone, extra(Record{Code: k.code, Cause: k.cause, Kind: k.kind, Reason: k.reason})})
	}
	for _, r := range items {
		recs = append(recs, wireRecord{r.Name, r.Value, r.Profile, r.From, r.To, r.Phase, extra(r)})
	}
	return recs, dropped
}

func extra(r Record) map[string]any {
	if r.Code == 0 && r.Cause == "" && r.Kind == "" && r.Type == nil && r.Raw == nil && r.Reason == "" && r.ErrorCode == nil {
		return nil
	}
	e := map[string]any{}
	if r.Code != 0 {
		e["code"] = r.Code
	}
	if r.Cause != "" {
		e["cause"] = r.Cause
	}
	if r.Kind != "" {
		e["kind"] = r.Kind
	}
	if r.Reason != "" {
		e["reason"] = r.Reason
	}
	if r.Type != nil {
		e["type"] = scalar(r.Type)
	}
	if r.ErrorCode != nil {
		e["error_code"] = scalar(r.ErrorCode)
	}
	if r.Raw != nil {
		raw := r.Raw
		if len(raw) > maxRawText {
			raw = raw[:maxRawText]
		}
		e["text"] = string(raw)
	}
	return e
}

// scalar keeps a label's raw value small: a string cut to 64 bytes, a number, or nothing.
func scalar(v any) any {
	switch x := v.(type) {
	case string:
		if len(x) > 64 {
			return x[:64]
		}
		return x
	case float64:
		return x
	}
	return nil
}

// marshalBatch is the batch message: records, connected devices per profile, the engine's own timer lag (the latest
// timer, and how many fired in each lag bucket).
// trace is the frame trace since the last batch (trace.go), nil when the start asked for none.
func marshalBatch(recs []wireRecord, dropped int, connected map[string]int, lagMs float64, lagCounts []int64,
	final bool, trace [][]any) []byte {
	typ := "batch"
	if final {
		typ = "stopped"
	}
	m := map[string]any{"type": typ, "records": recs, "dropped": dropped, "connected": connected, "lag_ms": lagMs}
	if lagCounts != nil {
		m["lag_counts"] = lagCounts
	}
	if trace != nil {
		m["trace"] = trace
	}
	b, _ := json.Marshal(m)
	return b
}
