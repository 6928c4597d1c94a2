package main

// A template renders its variables as the k6 device's JSON.stringify does, byte for byte: the two engines send the
// same text. The expected line is node's own output for the same values (`JSON.stringify`), not ours.

import (
	"encoding/json"
	"math"
	"testing"
)

func TestTemplateRendersAsJSONStringify(t *testing.T) {
	var tpl Template
	src := `{"s":"{s}","n":"{n}","i":"{i}","f":"{f}","big":"{big}","tiny":"{tiny}","t":"{t}","neg":"{neg}",` +
		`"max":"{max}","txt":"id-{i}<{s}>"}`
	if err := json.Unmarshal([]byte(src), &tpl); err != nil {
		t.Fatal(err)
	}
	vars := VarsOf(map[string]any{"s": "a<b>&c\u2028d\"e\\f\n\u0001é", "n": math.Copysign(0, -1), "i": 1733570000123.0, "f": 0.1,
		"big": 1.5e21, "tiny": 1e-7, "t": true, "neg": -42.0, "max": 9007199254740992.0})
	// node -e 'console.log(JSON.stringify({s: "a<b>&c\u2028d\"e\\f\n\u0001é", n: -0, ...}))'
	want := `{"s":"a<b>&c` + "\u2028" + `d\"e\\f\n\u0001é","n":0,"i":1733570000123,"f":0.1,"big":1.5e+21,` +
		`"tiny":1e-7,"t":true,"neg":-42,"max":9007199254740992,` +
		`"txt":"id-1733570000123<a<b>&c` + "\u2028" + `d\"e\\f\n\u0001é>"}`
	if got := string(tpl.Render(&vars)); got != want {
		t.Fatalf("rendered\n%s\nwant (JSON.stringify)\n%s", got, want)
	}
}

func BenchmarkTemplateRenderPing(b *testing.B) {
	var tpl Template
	if err := json.Unmarshal([]byte(`{"type":"ping","id":"{ping_id}","t":"{now}","session_id":"{session_id}"}`),
		&tpl); err != nil {
		b.Fatal(err)
	}
	vars := VarsOf(map[string]any{"ping_id": 42.0, "now": 1733570000123.0, "session_id": "8f14e45f-ceea-467f-a0e1-9b7c2d0c1a55"})
	b.ReportAllocs()
	for b.Loop() {
		tpl.Render(&vars)
	}
}
