package main

// The dialect's wire data, interpreted as core/dialect.ts does: templates rendered with the device's variables (keys in
// the order the dialect wrote them), matchers tested against server messages, captures copied into the variables. The
// dialect arrives validated (core/dialect.ts validateDialect) from the k6 side; the engine only interprets it.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Vars are a device's wire variables by name: string, float64, bool or nil values (JSON's own types). A device holds
// about a dozen, so they are a short list searched in turn: a Go map of more than eight costs two groups and a
// directory, 663 B a device against the list's 352 (issue 39, engine heap profile at 10,000 idle devices).
type Vars struct{ kv []varKV }

type varKV struct {
	name string
	v    any
}

// varsRoom is how many variables a device may gain past its own before its list grows: an idle wakestorm device
// captures five (resume_token, resumed, ping_id, now, pong_id), a talking one a few more.
const varsRoom = 8

// VarsOf is a device's variables, starting from these.
func VarsOf(m map[string]any) Vars {
	vs := Vars{kv: make([]varKV, 0, len(m)+varsRoom)}
	for k, v := range m {
		vs.kv = append(vs.kv, varKV{k, v})
	}
	return vs
}

// Lookup is a variable's value and whether it is set.
func (vs *Vars) Lookup(name string) (any, bool) {
	for i := range vs.kv {
		if vs.kv[i].name == name {
			return vs.kv[i].v, true
		}
	}
	return nil, false
}

// Get is a variable's value, nil when it is not set.
func (vs *Vars) Get(name string) any {
	v, _ := vs.Lookup(name)
	return v
}

// Set sets a variable.
func (vs *Vars) Set(name string, v any) {
	for i := range vs.kv {
		if vs.kv[i].name == name {
			vs.kv[i].v = v
			return
		}
	}
	vs.kv = append(vs.kv, varKV{name, v})
}

// Delete unsets a variable.
func (vs *Vars) Delete(name string) {
	for i := range vs.kv {
		if vs.kv[i].name == name {
			last := len(vs.kv) - 1
			vs.kv[i] = vs.kv[last]
			vs.kv[last] = varKV{}
			vs.kv = vs.kv[:last]
			return
		}
	}
}

// clone is a copy with room for n more.
func (vs *Vars) clone(n int) Vars {
	c := Vars{kv: make([]varKV, len(vs.kv), len(vs.kv)+n)}
	copy(c.kv, vs.kv)
	return c
}

var placeholder = regexp.MustCompile(`\{([a-z_][a-z0-9_]*)\}`)
var whole = regexp.MustCompile(`^\{([a-z_][a-z0-9_]*)\}$`)

// unset is JS's undefined, null or ” for a variable: a placeholder it fills leaves its field out.
func unset(v any, ok bool) bool {
	if !ok || v == nil {
		return true
	}
	s, isStr := v.(string)
	return isStr && s == ""
}

// text is a variable as a template string shows it (JS String()).
func text(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

// Fill fills a string's placeholders (each value through encode); ok is false when one of them is unset.
func Fill(s string, vars *Vars, encode func(string) string) (string, bool) {
	missing := false
	out := placeholder.ReplaceAllStringFunc(s, func(m string) string {
		v, ok := vars.Lookup(m[1 : len(m)-1])
		if unset(v, ok) {
			missing = true
			return ""
		}
		if encode != nil {
			return encode(text(v))
		}
		return text(v)
	})
	return out, !missing
}

// node is a compiled template value.
type node struct {
	kind   byte // 'l' literal, 'v' variable, 't' text with placeholders, 'a' array, 'o' object
	lit    json.RawMessage
	name   string
	text   string
	items  []*node
	keys   [][]byte // an object's keys, JSON-encoded once at compile time
	fields []*node
}

// Template is a message the device sends, compiled once.
type Template struct {
	root *node
	// size is what a render usually needs (its fixed text and room for each variable): one allocation per message.
	size int
}

// UnmarshalJSON keeps the object keys in the order the dialect wrote them.
func (t *Template) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	n, err := compile(dec)
	t.root = n
	if err == nil {
		t.size = n.size()
	}
	return err
}

// size is the node's fixed text plus 32 bytes for each variable in it.
func (n *node) size() int {
	s := len(n.lit) + len(n.text) + 2
	if n.kind == 'v' || n.kind == 't' {
		s += 32
	}
	for _, c := range n.items {
		s += c.size() + 1
	}
	for i, c := range n.fields {
		s += len(n.keys[i]) + c.size() + 2
	}
	return s
}

func compile(dec *json.Decoder) (*node, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch x := tok.(type) {
	case json.Delim:
		if x == '[' {
			n := &node{kind: 'a'}
			for dec.More() {
				c, err := compile(dec)
				if err != nil {
					return nil, err
				}
				n.items = append(n.items, c)
			}
			_, err := dec.Token()
			return n, err
		}
		n := &node{kind: 'o'}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			c, err := compile(dec)
			if err != nil {
				return nil, err
			}
			key, _ := json.Marshal(k.(string))
			n.keys = append(n.keys, key)
			n.fields = append(n.fields, c)
		}
		_, err := dec.Token()
		return n, err
	case string:
		if m := whole.FindStringSubmatch(x); m != nil {
			return &node{kind: 'v', name: m[1]}, nil
		}
		if strings.Contains(x, "{") {
			return &node{kind: 't', text: x}, nil
		}
		b, _ := json.Marshal(x)
		return &node{kind: 'l', lit: b}, nil
	case json.Number:
		return &node{kind: 'l', lit: json.RawMessage(x.String())}, nil
	case bool:
		return &node{kind: 'l', lit: json.RawMessage(strconv.FormatBool(x))}, nil
	case nil:
		return &node{kind: 'l', lit: json.RawMessage("null")}, nil
	}
	return nil, fmt.Errorf("unexpected token %v", tok)
}

// Render is the message text the template makes with these variables.
func (t *Template) Render(vars *Vars) []byte {
	b := bytes.NewBuffer(make([]byte, 0, t.size))
	t.root.build(b, vars)
	return b.Bytes()
}

// build writes the node's JSON; false when it is left out (a variable unset).
func (n *node) build(b *bytes.Buffer, vars *Vars) bool {
	switch n.kind {
	case 'l':
		b.Write(n.lit)
	case 'v':
		v, ok := vars.Lookup(n.name)
		if !ok || v == "" {
			return false
		}
		// As JSON.stringify writes it (the k6 device's template), not encoding/json's HTML-safe escapes.
		writeCanonical(b, v)
	case 't':
		s, ok := Fill(n.text, vars, nil)
		if !ok {
			return false
		}
		writeString(b, s)
	case 'a':
		b.WriteByte('[')
		first := true
		for _, c := range n.items {
			mark := b.Len()
			if !first {
				b.WriteByte(',')
			}
			if c.build(b, vars) {
				first = false
			} else {
				b.Truncate(mark)
			}
		}
		b.WriteByte(']')
	case 'o':
		b.WriteByte('{')
		first := true
		for i, c := range n.fields {
			mark := b.Len()
			if !first {
				b.WriteByte(',')
			}
			b.Write(n.keys[i])
			b.WriteByte(':')
			if c.build(b, vars) {
				first = false
			} else {
				b.Truncate(mark)
			}
		}
		b.WriteByte('}')
	}
	return true
}

// check is one field of a matcher: the value at path equals want, or the variable varName when that is set.
type check struct {
	path    []string
	want    any
	varName string
}

// Matcher tests a server message: it has every field of the matcher.
type Matcher struct{ checks []check }

// UnmarshalJSON compiles a matcher object ({"type": "pong", "session_id": "{session_id}"}).
func (m *Matcher) UnmarshalJSON(b []byte) error {
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	for path, want := range raw {
		c := check{path: strings.Split(path, "."), want: want}
		if s, ok := want.(string); ok {
			if w := whole.FindStringSubmatch(s); w != nil {
				c.varName = w[1]
			}
		}
		m.checks = append(m.checks, c)
	}
	return nil
}

// at is the value at a dotted path: an object's own key, or an array's element by its decimal index ("items.0.type").
func at(msg map[string]any, path []string) (any, bool) {
	var v any = msg
	for _, p := range path {
		switch o := v.(type) {
		case map[string]any:
			x, ok := o[p]
			if !ok {
				return nil, false
			}
			v = x
		case []any:
			i, ok := arrayIndex(p)
			if !ok || i >= len(o) {
				return nil, false
			}
			v = o[i]
		default:
			return nil, false
		}
	}
	return v, true
}

// arrayIndex is a path segment as an array index: a canonical decimal ("0", "12"; not "01", "-1" or "1e0").
func arrayIndex(p string) (int, bool) {
	if p == "" || len(p) > 9 || p[0] == '0' && len(p) > 1 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return 0, false
		}
		n = n*10 + int(p[i]-'0')
	}
	return n, true
}

// Matches is true when the message has every field of the matcher ({name} values compared with the variables).
func (m *Matcher) Matches(msg map[string]any, vars *Vars) bool {
	if m == nil {
		return false
	}
	for _, c := range m.checks {
		got, present := at(msg, c.path)
		if c.varName != "" {
			v, ok := vars.Lookup(c.varName)
			if ok && v != nil && (!present || !same(got, v)) {
				return false
			}
			continue
		}
		if !present || !same(got, c.want) {
			return false
		}
	}
	return true
}

// same is JS's === on JSON values (objects and arrays are never equal to a literal).
func same(a, b any) bool {
	switch x := a.(type) {
	case string, float64, bool:
		return a == b
	case nil:
		return b == nil
	default:
		_ = x
		return false
	}
}

// Capture copies fields of a matched message into variables; a field the message lacks unsets its variable. It is
// the dialect's {variable: "dotted.path"} object with each path split once, when the dialect is read.
type Capture []captured

type captured struct {
	name string
	path []string
}

// UnmarshalJSON compiles a capture object, in the order of its variables' names.
func (c *Capture) UnmarshalJSON(b []byte) error {
	var raw map[string]string
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*c = make(Capture, 0, len(raw))
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		*c = append(*c, captured{name, strings.Split(raw[name], ".")})
	}
	return nil
}

// Apply copies the captured fields of msg into vars.
func (c Capture) Apply(msg map[string]any, vars *Vars) {
	for _, f := range c {
		v, ok := at(msg, f.path)
		switch {
		case !ok:
			vars.Delete(f.name)
		case isComposite(v):
			vars.Set(f.name, canonicalJSON(v))
		default:
			vars.Set(f.name, v)
		}
	}
}

func isComposite(v any) bool {
	switch v.(type) {
	case map[string]any, []any:
		return true
	}
	return false
}

// Answer is a server request the device answers: its matcher, what it captures for the answer, and the answer.
type Answer struct {
	Match   *Matcher  `json:"match"`
	Capture Capture   `json:"capture"`
	Send    *Template `json:"send"`
}

// answerOf is the answer a request gets (the first whose matcher it matches), or nil.
func (d *Dialect) answerOf(msg map[string]any, vars *Vars) *Answer {
	for i := range d.Answer {
		if d.Answer[i].Match.Matches(msg, vars) {
			return &d.Answer[i]
		}
	}
	return nil
}

// Render is the answer's text: its captures apply to a copy of the variables, not to the device's own.
func (a *Answer) Render(msg map[string]any, vars *Vars) []byte {
	local := vars.clone(len(a.Capture))
	a.Capture.Apply(msg, &local)
	return a.Send.Render(&local)
}

// Dialect is the part of core/dialect.ts's Dialect the engine interprets.
type Dialect struct {
	Name      string `json:"name"`
	Lifecycle string `json:"lifecycle"`
	// Variables are the device variables the dialect declares (core/variables.ts).
	Variables []string `json:"variables"`
	Connect   struct {
		Path      string            `json:"path"`
		Identify  string            `json:"identify"`
		HelloPath string            `json:"hello_path"`
		Query     map[string]string `json:"query"`
		QueryKeys []string          `json:"-"`
		Headers   map[string]string `json:"headers"`
	} `json:"connect"`
	Send struct {
		Hello        *Template  `json:"hello"`
		Ping         *Template  `json:"ping"`
		Pong         *Template  `json:"pong"`
		Wake         []Template `json:"wake"`
		EndOfSpeech  *Template  `json:"end_of_speech"`
		PlaybackDone *Template  `json:"playback_done"`
		Abort        *Template  `json:"abort"`
		Listen       *Template  `json:"listen"`
	} `json:"send"`
	Recv struct {
		Ready      *Matcher        `json:"ready"`
		Ping       *Matcher        `json:"ping"`
		Pong       *Matcher        `json:"pong"`
		Transcript *Matcher        `json:"transcript"`
		ReplyStart *Matcher        `json:"reply_start"`
		ReplyEnd   *Matcher        `json:"reply_end"`
		SessionEnd *Matcher        `json:"session_end"`
		Error      *Matcher        `json:"error"`
		Ignore     []Matcher       `json:"ignore"`
		AckRaw     json.RawMessage `json:"ack"`
		Ack        *Matcher        `json:"-"`
		// AckIsReady: the handshake of a per-wake channel is the acknowledgement ("ack": "ready").
		AckIsReady bool `json:"-"`
	} `json:"recv"`
	Capture map[string]Capture `json:"capture"`
	// Answer: requests the server sends that the device answers (core/dialect.ts Dialect.answer).
	Answer []Answer `json:"answer"`
	Resume bool     `json:"resume"`
	Audio  struct {
		Up   AudioSpec `json:"up"`
		Down AudioSpec `json:"down"`
	} `json:"audio"`
	// Provision is the HTTP call before the socket; nil: none.
	Provision *Provision `json:"provision"`
	// TypeField names a message's kind (core/dialect.ts typeField, computed by the k6 side).
	TypeField string `json:"type_field"`
}

// Provision is the firmware's HTTP call before its socket (core/dialect.ts Provision).
type Provision struct {
	When    string            `json:"when"`
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
	Body    *Template         `json:"body"`
	Capture Capture           `json:"capture"`
}

// wsPathOf is the path and query of a WebSocket (or http) URL, or a path itself (core/device-env.ts wsPathOf).
func wsPathOf(u string) (string, bool) {
	if strings.HasPrefix(u, "/") {
		return u, true
	}
	m := wsURLShape.FindStringSubmatch(u)
	if m == nil {
		return "", false
	}
	if m[1] == "" {
		return "/", true
	}
	return m[1], true
}

// provisionTarget is where a provision call goes: base as given when it names a path (a firmware's configured OTA
// URL), else the dialect's path on that origin (core/device-env.ts provisionTarget).
func provisionTarget(base, path string) string {
	if withPath.MatchString(base) {
		return base
	}
	return strings.TrimSuffix(base, "/") + path
}

var withPath = regexp.MustCompile(`(?i)^https?://[^/]+/.`)

var wsURLShape = regexp.MustCompile(`(?i)^(?:wss?|https?)://[^/?#]*(/[^#]*)?`)

// AudioSpec is how audio goes one way: codec and framing (core/dialect.ts AudioSpec).
type AudioSpec struct {
	Codec      string  `json:"codec"`
	Framing    string  `json:"framing"`
	SampleRate float64 `json:"sample_rate"`
	// Framing "json": the uplink message a frame rides in ("{audio}" is the frame in base64), and which downlink
	// messages carry reply audio in which field.
	Message *Template `json:"message"`
	Match   *Matcher  `json:"match"`
	Field   string    `json:"field"`
	path    []string
}

// ParseDialect reads a validated dialect; the query keys keep their order.
func ParseDialect(b []byte) (*Dialect, error) {
	d := &Dialect{}
	if err := json.Unmarshal(b, d); err != nil {
		return nil, err
	}
	if d.Audio.Down.Framing == "json" {
		if d.Audio.Down.Match == nil || d.Audio.Down.Field == "" {
			return nil, fmt.Errorf("audio.down framing json needs match and field")
		}
		d.Audio.Down.path = strings.Split(d.Audio.Down.Field, ".")
	}
	if d.Audio.Up.Framing == "json" && d.Audio.Up.Message == nil {
		return nil, fmt.Errorf("audio.up framing json needs message")
	}
	// recv.ready, recv.ack and recv.reply_start may be null: the server has no such message (core/dialect.ts).
	d.Recv.AckIsReady = string(d.Recv.AckRaw) == `"ready"`
	if len(d.Recv.AckRaw) > 0 && d.Recv.AckRaw[0] == '{' {
		d.Recv.Ack = &Matcher{}
		if err := json.Unmarshal(d.Recv.AckRaw, d.Recv.Ack); err != nil {
			return nil, err
		}
	}
	var raw struct {
		Connect struct {
			Query json.RawMessage `json:"query"`
		} `json:"connect"`
	}
	_ = json.Unmarshal(b, &raw)
	if len(raw.Connect.Query) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw.Connect.Query))
		if tok, err := dec.Token(); err == nil && tok == json.Delim('{') {
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					break
				}
				d.Connect.QueryKeys = append(d.Connect.QueryKeys, k.(string))
				var skip any
				_ = dec.Decode(&skip)
			}
		}
	}
	return d, nil
}

// jsonAudio is the base64 audio a server message carries (framing "json"): its decoded length, whether the message is
// an audio message at all, and whether its field held base64.
func (d *Dialect) jsonAudio(msg map[string]any, vars *Vars) (n int, isAudio, ok bool) {
	a := &d.Audio.Down
	if a.Framing != "json" || !a.Match.Matches(msg, vars) {
		return 0, false, false
	}
	v, _ := at(msg, a.path)
	s, isStr := v.(string)
	if !isStr {
		return 0, true, false
	}
	n, ok = base64Length(s)
	return n, true, ok
}

// Known is true when a server message matches some step of the dialect, or one it ignores.
func (d *Dialect) Known(msg map[string]any, vars *Vars) bool {
	r := &d.Recv
	for _, m := range []*Matcher{r.Ready, r.Ack, r.Ping, r.Pong, r.Transcript, r.ReplyStart, r.ReplyEnd, r.SessionEnd, r.Error, d.Audio.Down.Match} {
		if m != nil && m.Matches(msg, vars) {
			return true
		}
	}
	for i := range r.Ignore {
		if r.Ignore[i].Matches(msg, vars) {
			return true
		}
	}
	return false
}
