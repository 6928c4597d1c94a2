package main

// The device's conformance corpus (core/traces/, docs/traces.md) replayed in `go test`, without Node: each trace's
// engine input (the start as a k6 VU builds it) and expected events come from testdata/corpus.jsonl, which
// test/helpers/record-traces.ts writes from the traces (test/unit/conformance.test.ts fails when it is stale). What
// went on the wire and the log lines are held to the trace as they are; a metric by its time, name and value (its tags
// are made on k6's side from the record's raw fields, and the TypeScript test checks those).

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
)

type corpusEntry struct {
	File  string          `json:"file"`
	Input json.RawMessage `json:"input"`
	// Phased: the trace has fault windows. Whether k6 keeps a steady-only record (rules.metric_phases) then depends on
	// the span's phase, judged on k6's side: such records are left out here on both sides (the TypeScript test, which
	// turns the engine's records into metrics as k6 does, checks them).
	Phased bool    `json:"phased"`
	Expect [][]any `json:"expect"`
}

// rounded is a JSON value with its numbers to 1/1000 (as the TypeScript test compares them), printed with sorted keys.
// abbreviated is a long string of a sent message (base64 audio in JSON) as the corpus keeps it: its length and the sum
// of its bytes (test/helpers/replay.ts abbreviate, the same rule).
func abbreviated(s string) string {
	if len(s) <= 200 {
		return s
	}
	sum := 0
	for i := 0; i < len(s); i++ {
		sum = (sum + int(s[i])) % 1000000
	}
	return fmt.Sprintf("<%d chars, sum %d>", len(s), sum)
}

func rounded(v any) string {
	var walk func(any) any
	walk = func(x any) any {
		switch y := x.(type) {
		case float64:
			return math.Round(y*1000) / 1000
		case string:
			return abbreviated(y)
		case []any:
			out := make([]any, len(y))
			for i, e := range y {
				out[i] = walk(e)
			}
			return out
		case map[string]any:
			out := map[string]any{}
			for k, e := range y {
				out[k] = walk(e)
			}
			return out
		}
		return x
	}
	b, _ := json.Marshal(walk(x2any(v)))
	return string(b)
}

// x2any turns typed values (json.RawMessage, wireRecord, map[string]string) into plain JSON values.
func x2any(v any) any {
	b, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

// corpusSplit is a trace's events as compared: the wire in order, then outcomes (metrics by time, name and value,
// and log lines) sorted.
func corpusSplit(events [][]any, fromEngine bool, skip func(name string) bool) (wire, outcomes []string) {
	for _, e := range events {
		kind, _ := e[1].(string)
		switch {
		case fromEngine && kind == "record":
			r := x2any(e[2]).([]any)
			name := r[0].(string)
			if strings.HasPrefix(name, "_") || name == "audio_frames" || skip(name) {
				continue
			}
			outcomes = append(outcomes, rounded([]any{e[0], "metric", name, r[1]}))
		case kind == "metric" && skip(e[2].(string)):
		case kind == "metric":
			outcomes = append(outcomes, rounded([]any{e[0], "metric", e[2], e[3]}))
		case kind == "log":
			outcomes = append(outcomes, rounded(e))
		default:
			wire = append(wire, rounded(e))
		}
	}
	slices.Sort(outcomes)
	return wire, outcomes
}

func firstDiff(got, want []string) string {
	for i := 0; i < max(len(got), len(want)); i++ {
		g, w := "(nothing)", "(nothing)"
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			return fmt.Sprintf("#%d\n  got  %s\n  want %s", i, g, w)
		}
	}
	return ""
}

func TestCorpusReplaysOnTheEngine(t *testing.T) {
	f, err := os.Open("testdata/corpus.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	n := 0
	for sc.Scan() {
		var c corpusEntry
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatal(err)
		}
		n++
		t.Run(c.File, func(t *testing.T) {
			var in replayInput
			if err := json.Unmarshal(c.Input, &in); err != nil {
				t.Fatal(err)
			}
			events, err := replayTrace(&in)
			if err != nil {
				t.Fatal(err)
			}
			skip := func(name string) bool { return c.Phased && in.Start.Rules.phase(name) == phaseSteadyOnly }
			gw, go_ := corpusSplit(events, true, skip)
			ww, wo := corpusSplit(c.Expect, false, skip)
			if d := firstDiff(gw, ww); d != "" {
				t.Errorf("wire differs at %s", d)
			}
			if d := firstDiff(go_, wo); d != "" {
				t.Errorf("outcomes differ at %s", d)
			}
		})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("only %d traces in testdata/corpus.jsonl", n)
	}
}
