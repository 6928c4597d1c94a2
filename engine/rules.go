package main

// The device rules written once in core/device-rules.ts and sent in every start (DEVICE_RULES): which closes exempt
// the server from a resume, which session ends are not drops, which captured strings are numbers. The engine holds
// none of them itself; a start without them is refused.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Rules is core/device-rules.ts DEVICE_RULES as the start carries it.
type Rules struct {
	// ResumeExemptCloses: closes after which the server owes no resume (it went away on purpose: 1001, 1012).
	ResumeExemptCloses []int `json:"resume_exempt_closes"`
	// KeptSessionReasons: the session ends that are not drops (complete, the device's own barge-in or cancel).
	KeptSessionReasons []string `json:"kept_session_reasons"`
	// SessionEndReasons: the reasons a server's session end may give; any other is read as "error".
	SessionEndReasons []string `json:"session_end_reasons"`
	// NumberPattern: a captured string that is a number (reply_bytes "4096"), as a regular expression.
	NumberPattern string `json:"number_pattern"`
	// NotedViolations: the violations a device counts with the link kept (not_json, binary_outside_session).
	NotedViolations []string `json:"noted_violations"`
	// MetricPhases: how a metric's span labels it on the k6 side: "tagged" (chaos phase by the span) or "steady_only"
	// (counted only in steady state); a metric not named carries no phase.
	MetricPhases map[string]string `json:"metric_phases"`
	numberRe     *regexp.Regexp
}

// compile checks the rules a start carried; the error names the first one missing.
func (r *Rules) compile() error {
	switch {
	case len(r.ResumeExemptCloses) == 0:
		return fmt.Errorf("start has no rules.resume_exempt_closes")
	case len(r.KeptSessionReasons) == 0:
		return fmt.Errorf("start has no rules.kept_session_reasons")
	case len(r.SessionEndReasons) == 0:
		return fmt.Errorf("start has no rules.session_end_reasons")
	case r.NumberPattern == "":
		return fmt.Errorf("start has no rules.number_pattern")
	case len(r.NotedViolations) == 0:
		return fmt.Errorf("start has no rules.noted_violations")
	case len(r.MetricPhases) == 0:
		return fmt.Errorf("start has no rules.metric_phases")
	}
	for name, p := range r.MetricPhases {
		if p != "tagged" && p != "steady_only" {
			return fmt.Errorf("start's rules.metric_phases.%s is %q, not tagged or steady_only", name, p)
		}
	}
	re, err := regexp.Compile(r.NumberPattern)
	if err != nil {
		return fmt.Errorf("start's rules.number_pattern: %v", err)
	}
	r.numberRe = re
	return nil
}

func (r *Rules) resumeExempt(code int) bool { return slices.Contains(r.ResumeExemptCloses, code) }

func (r *Rules) keepsLink(kind string) bool { return slices.Contains(r.NotedViolations, kind) }

// phase is how the k6 side treats a record's span (records.go phaseNone, phaseTag, phaseSteadyOnly).
func (r *Rules) phase(name string) int {
	switch r.MetricPhases[name] {
	case "tagged":
		return phaseTag
	case "steady_only":
		return phaseSteadyOnly
	}
	return phaseNone
}

func (r *Rules) dropped(reason string) bool { return !slices.Contains(r.KeptSessionReasons, reason) }

func (r *Rules) endReason(reason string) string {
	if slices.Contains(r.SessionEndReasons, reason) {
		return reason
	}
	return "error"
}

// number is a captured value as a non-negative finite number: a JSON number, or a string the number pattern accepts.
func (r *Rules) number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, x >= 0
	case string:
		if r.numberRe == nil || !r.numberRe.MatchString(x) {
			return 0, false
		}
		n, err := strconv.ParseFloat(x, 64)
		return n, err == nil && n >= 0 && n <= 1.7976931348623157e308
	}
	return 0, false
}

// canonicalJSON is a captured object or array as text, as core/device-rules.ts canonicalJson writes it: keys sorted by
// code point, numbers as JavaScript prints them, strings escaped only where JSON requires.
func canonicalJSON(v any) string {
	var b bytes.Buffer
	writeCanonical(&b, v)
	return b.String()
}

func writeCanonical(b *bytes.Buffer, v any) {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys) // UTF-8 byte order is code point order
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeString(b, k)
			b.WriteByte(':')
			writeCanonical(b, x[k])
		}
		b.WriteByte('}')
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			writeCanonical(b, e)
		}
		b.WriteByte(']')
	case string:
		writeString(b, x)
	case float64:
		// A whole number below 2^53 is its digits in both languages (JavaScript writes -0 as 0); the rest as ECMAScript
		// prints them, which encoding/json follows (ES6's format).
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			var digits [24]byte
			b.Write(strconv.AppendInt(digits[:0], int64(x), 10))
			return
		}
		enc, _ := json.Marshal(x)
		b.Write(enc)
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case nil:
		b.WriteString("null")
	default:
		// Other numbers (json.Number, ints) as encoding/json writes them.
		enc, _ := json.Marshal(x)
		b.Write(enc)
	}
}

// writeString quotes as JSON.stringify does: ", \ and control characters escaped, everything else as itself.
func writeString(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	if plainASCII(s) {
		b.WriteString(s)
		b.WriteByte('"')
		return
	}
	for _, c := range s {
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if c < 0x20 {
				fmt.Fprintf(b, `\u%04x`, c)
			} else {
				b.WriteRune(c)
			}
		}
	}
	b.WriteByte('"')
}

// plainASCII is whether s is printable ASCII with no quote or backslash: JSON writes it as it is.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// askedSubprotocols is the Sec-WebSocket-Protocol value of an upgrade's headers ("" when it asks for none).
func askedSubprotocols(headers map[string]string) string {
	for k, v := range headers {
		if strings.EqualFold(k, "sec-websocket-protocol") {
			return v
		}
	}
	return ""
}

// subprotocolProblem is core/device-rules.ts subprotocolProblem (RFC 6455 §4.1): a 101 naming a subprotocol the
// request's Sec-WebSocket-Protocol (asked) did not list, or none where it listed one; "" when they agree.
func subprotocolProblem(asked, selected string) string {
	var list []string
	for _, p := range strings.Split(asked, ",") {
		if p = strings.TrimSpace(p); p != "" {
			list = append(list, p)
		}
	}
	switch {
	case selected != "" && !slices.Contains(list, selected):
		return "unrequested_subprotocol"
	case selected == "" && len(list) > 0:
		return "missing_subprotocol"
	}
	return ""
}
