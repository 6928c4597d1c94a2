// Rules both device engines follow, written once. The TypeScript device (device-link.ts, device-session.ts,
// dialect.ts) calls the functions here; the native engine (engine/rules.go) receives DEVICE_RULES in every start
// (core/engine-contract.ts) and refuses a start without them. The conformance corpus (core/traces/) pins each one on
// both engines.
import type { DeviceMetricName } from './metric-names.ts';
import { CLOSE, KEPT_SESSION_REASONS, SESSION_END_REASONS } from './protocol.ts';

/**
 * A captured string that is a number: JSON's number grammar, nothing around it (not "", " 12 ", "0x10", "1_000" or
 * "Infinity", each of which JavaScript's Number() or Go's ParseFloat would read one way or another).
 */
const NUMBER_PATTERN = '^-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?$';
const NUMBER = new RegExp(NUMBER_PATTERN);

/** What the engine's start carries (engine/rules.go Rules). */
export const DEVICE_RULES = {
  /** Closes after which the server owes no resume: it went away on purpose. */
  resume_exempt_closes: [CLOSE.GOING_AWAY, CLOSE.SERVICE_RESTART] as number[],
  /** Session ends that are not drops. */
  kept_session_reasons: [...KEPT_SESSION_REASONS] as string[],
  /** The reasons a session end may give; any other is read as `error`. */
  session_end_reasons: [...SESSION_END_REASONS] as string[],
  number_pattern: NUMBER_PATTERN,
  /**
   * Protocol violations a device counts and lets pass, the link kept (a firmware logs the message it cannot parse and
   * goes on): a text frame that is not a JSON object where every dialect speaks JSON, and reply audio with no session
   * to play it in. Every other kind (too much, too big, too deep, broken frames) makes the device close the link.
   */
  noted_violations: ['not_json', 'binary_outside_session'] as string[],
  /**
   * How a metric's span [from, to] labels it. `tagged`: chaos:steady|during|recovery by the phase the span fell in (an
   * outcome judged beside the faults). `steady_only`: counted only when the span is in steady state (a link a fault
   * cut is the fault's, not the server's). A metric not named here carries no phase.
   */
  metric_phases: {
    connect_success: 'tagged',
    reconnect_time: 'tagged',
    protocol_violations: 'tagged',
    unplanned_drops: 'steady_only',
    wake_success: 'tagged',
    wake_ack_latency: 'tagged',
    session_drop_rate: 'tagged',
    endpointing_latency: 'tagged',
    response_latency: 'tagged',
    processing_latency: 'tagged',
    early_replies: 'tagged',
    early_reply_speech: 'tagged',
    replies_unheard: 'tagged',
    reply_truncated: 'tagged',
    reply_stutter: 'tagged',
    playback_stall_time: 'tagged',
  } as Partial<Record<DeviceMetricName, MetricPhase>>,
};

/** How a metric's span labels it (DEVICE_RULES.metric_phases); null: no phase. */
export type MetricPhase = 'tagged' | 'steady_only';

export function metricPhase(name: DeviceMetricName): MetricPhase | null {
  return DEVICE_RULES.metric_phases[name] ?? null;
}

/** True when a violation of this kind is counted with the link kept. */
export function violationKeepsLink(kind: string): boolean {
  return DEVICE_RULES.noted_violations.includes(kind);
}

/** True when a close exempts the server from resuming the session it cut. */
export function resumeExempt(code: number): boolean {
  return DEVICE_RULES.resume_exempt_closes.includes(code);
}

/** A captured value as a non-negative finite number (a JSON number, or a string of one), else null. */
export function capturedNumber(v: unknown): number | null {
  const n = typeof v === 'string' ? (NUMBER.test(v) ? Number(v) : NaN) : v;
  return typeof n === 'number' && Number.isFinite(n) && n >= 0 ? n : null;
}

/**
 * Whether a device owes a link back after a fault (recovery counts it): a persistent link does; a per-wake channel
 * does not (its recovery is that its next wake succeeds, which the wake's own outcome judges).
 */
export function owesReturn(d: { lifecycle: string }): boolean {
  return d.lifecycle === 'persistent';
}

/**
 * When a firmware that polls its link every `every` ms from `connectedAt` notices a close at `at`: its first check
 * strictly after the close. The clock may be fractional (the native engine's is).
 */
export function nextPoll(connectedAt: number, at: number, every: number): number {
  return connectedAt + (Math.floor((at - connectedAt) / every) + 1) * every;
}

function codePointOrder(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n;) {
    const x = a.codePointAt(i)!;
    const y = b.codePointAt(i)!;
    if (x !== y) return x - y;
    i += x > 0xffff ? 2 : 1;
  }
  return a.length - b.length;
}

/**
 * A captured object or array as the text a variable holds: keys sorted by code point at every level, numbers and
 * strings as JSON.stringify writes them. The same text on both engines, whatever order the server sent the keys in.
 */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map((x) => canonicalJson(x === undefined ? null : x)).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o).sort(codePointOrder);
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

/**
 * RFC 6455 §4.1: the subprotocols a client asked for are its Sec-WebSocket-Protocol header (a dialect's connect
 * headers say it); a 101 that names one it did not ask for must fail the connection (unrequested_subprotocol), and one
 * that names none when the dialect asked for one leaves the device with a protocol it cannot speak
 * (missing_subprotocol). Null when the upgrade agrees.
 */
export function subprotocolProblem(
  headers: Record<string, string>,
  selected: string,
): 'unrequested_subprotocol' | 'missing_subprotocol' | null {
  const key = Object.keys(headers).find((k) => k.toLowerCase() === 'sec-websocket-protocol');
  const asked =
    key === undefined
      ? []
      : headers[key]!.split(',')
          .map((p) => p.trim())
          .filter((p) => p !== '');
  if (selected !== '' && !asked.includes(selected)) return 'unrequested_subprotocol';
  if (selected === '' && asked.length > 0) return 'missing_subprotocol';
  return null;
}
