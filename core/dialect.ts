// A dialect: how a device's steps are said on the wire, as data. What a device does (connect, identify, keep alive,
// wake, speak, wait for the reply, play it, resume) is the device's (device-link.ts, device-session.ts); which
// messages carry those steps, which server messages mean what, and how audio is framed is the dialect's. A dialect is
// JSON (or a module exporting the same object): message templates with {placeholders}, matchers on the server's
// messages, captures of fields the device keeps, the audio codec and framing by name, the link's lifecycle. Nothing
// in it is code, so any device engine (this TypeScript one, a Go k6 extension later) interprets the same file.
import { canonicalJson } from './device-rules.ts';
import { WakestormError } from './errors.ts';
import { MULAW_RATE, PCM_RATES } from './audio-codec.ts';
import { OPUS_SAMPLE_RATES } from './opus.ts';
import { CAPTURED_ONLY, VARIABLES } from './variables.ts';

type Json = string | number | boolean | null | Json[] | { [k: string]: Json };
/**
 * A message the device sends: JSON whose strings may hold {placeholders}. A string that is exactly "{name}" becomes the
 * variable itself (a number stays a number); a field whose variable is unset is left out.
 */
export type Template = { [k: string]: Json };
/**
 * Which server message means a step: every field named must be equal (a dotted path reaches inside); a value "{name}"
 * must equal the device's variable of that name.
 */
export type Matcher = { [path: string]: string | number | boolean | null };
/** Variables a matched message sets: variable name → dotted path in the message. */
export type Capture = Record<string, string>;
/** A server request the device answers (Dialect.answer). */
export interface Answer {
  match: Matcher;
  /** Variables for `send` only, taken from the request (e.g. rpc_id ← payload.id). */
  capture: Capture;
  send: Template;
}

type AudioCodec = 'pcm_s16le' | 'opus' | 'mulaw';
/**
 * How audio rides: in binary WebSocket messages, 'raw' (one frame per message), or xiaozhi-esp32's BinaryProtocol2
 * (16-byte big-endian header: version, type 0, reserved, timestamp ms, payload size) and BinaryProtocol3 (4-byte
 * header: type 0, reserved, big-endian payload size); or 'json': base64 inside a JSON text message (OpenAI-Realtime's
 * input_audio_buffer.append, Twilio's media events), the message given by `message` (up) or `match` + `field` (down).
 */
export type AudioFraming = 'raw' | 'xiaozhi-v2' | 'xiaozhi-v3' | 'json';
export const AUDIO_FRAMINGS: readonly AudioFraming[] = ['raw', 'xiaozhi-v2', 'xiaozhi-v3', 'json'];

interface AudioSpec {
  /** pcm_s16le (8, 16, 24 or 48 kHz), mulaw (G.711, 8 kHz) or opus (binary framings only). */
  codec: AudioCodec;
  framing: AudioFraming;
  sample_rate: number;
  /** Up, framing 'json': the message one frame rides in; the string "{audio}" becomes the frame in base64. */
  message?: Template;
  /** Down, framing 'json': which server messages carry reply audio, and the field that holds it in base64. */
  match?: Matcher;
  field?: string;
}

/**
 * An HTTP call a firmware makes before its socket (xiaozhi's OTA check): its answer gives the WebSocket URL and
 * credentials. Sent to the provisioning base (the run's --provision-url, else the devices' target over http).
 */
export interface Provision {
  /** 'boot': once, before the device's first connect; 'connect': before every connect. */
  when: 'boot' | 'connect';
  method: 'GET' | 'POST';
  /** The path on the provisioning base, with {placeholders}. */
  path: string;
  /** Request headers; one whose placeholder is unset is left out. */
  headers?: Record<string, string>;
  /** A JSON body (a template), or null for none. */
  body?: Template | null;
  /**
   * Variables from the JSON answer (variable → dotted path). `ws_url` is where the socket goes: its path and query
   * replace connect.path and connect.query (the host stays the run's target, so faults still reach it); `token`
   * replaces the run's token.
   */
  capture: Capture;
}

export interface Dialect {
  name: string;
  description: string;
  /**
   * 'persistent': one link for the device's life, many conversations on it (reconnects with the profile's backoff).
   * 'per_wake': the device opens its channel at the wake word and closes it after the reply (connect and handshake
   * are part of the wait after the wake), as xiaozhi-esp32 firmware does.
   */
  lifecycle: 'persistent' | 'per_wake';
  /** The device's variables the dialect uses (core/variables.ts): a device fills these and no others. */
  variables: string[];
  connect: {
    /** Upgrade path; {device_id} is the device's id. */
    path: string;
    /**
     * 'profile': the profile chooses (its `connect`: 'path' uses `path`, 'hello' uses `hello_path` and sends `hello`);
     * 'hello': always `path` and a hello.
     */
    identify: 'profile' | 'hello';
    hello_path?: string;
    /** Query parameters of a path-identified connect; one whose placeholder is unset is left out (resume={resume_token}). */
    query?: Record<string, string>;
    /** Upgrade headers; one whose placeholder is unset is left out (Authorization: Bearer {token}). */
    headers?: Record<string, string>;
  };
  /** What the device sends, by step; null: the dialect has no such message. */
  send: {
    hello: Template | null;
    /** The device's own JSON heartbeat ({ping_id}, {now}). */
    ping: Template | null;
    /** The answer to a server ping ({ping_t} echoes the server's). */
    pong: Template | null;
    /** Sent in order on the wake word ({wake_id}, {wake_word}, {listen_mode}, {now}). */
    wake: Template[];
    /** Explicit end of speech (profiles with end_of_speech 'explicit'). */
    end_of_speech: Template | null;
    /** The reply has been played out. */
    playback_done: Template | null;
    /** Stop the reply (barge-in). */
    abort: Template | null;
    /**
     * Back to listening on the open link after a reply (profiles with after_reply 'listen', e.g. xiaozhi's auto mode:
     * `listen` start again, then the microphone streams until the user speaks or the channel ends).
     */
    listen: Template | null;
  };
  /** What the server's messages mean; null: the dialect has no such message. */
  recv: {
    /** Completes the handshake: the link is up. null: the server says nothing, the link is up when the socket opens. */
    ready: Matcher | null;
    ping: Matcher | null;
    pong: Matcher | null;
    /**
     * The wake is acknowledged: a message, or 'ready' (the handshake of a per-wake channel is the acknowledgement).
     * null: the server acknowledges nothing; the conversation starts when the wake is sent, and wake_ack_latency is
     * n/a for the dialect (its wakes count in wakes_without_ack).
     */
    ack: Matcher | 'ready' | null;
    transcript: Matcher | null;
    /** The reply begins. null: the server announces nothing, its first reply audio starts the reply. */
    reply_start: Matcher | null;
    reply_end: Matcher;
    /** The server ends the session (with a reason); null: the played-out reply ends it. */
    session_end: Matcher | null;
    error: Matcher | null;
    /**
     * Messages the device hears and needs nothing from (an LLM text, a sentence marker): neither a step nor an
     * unmatched message. Anything that matches no step and none of these is counted as `unmatched_messages`.
     */
    ignore: Matcher[];
  };
  /**
   * Variables taken from matched messages (ready: resume token, session id; ack: session id; pong: ping id …). Each
   * capture sets its variables from that message alone: a field it lacks leaves the variable unset.
   */
  capture: Partial<Record<CaptureEvent, Capture>>;
  audio: { up: AudioSpec; down: AudioSpec };
  /**
   * Requests the server sends that the device answers (xiaozhi's MCP `initialize` and `tools/list`, JSON-RPC with an
   * id): a message matching `match` is answered with `send`, whose placeholders may use the variables `capture` takes
   * from that request (the request's id echoed) besides the dialect's own. Answered before any other step is tried.
   */
  answer: Answer[];
  /**
   * Resume: the ready message's captures `resumed` (true when the server kept the session) and `resumed_session`
   * (its id) say whether an interrupted conversation goes on. false: a lost link loses the conversation.
   */
  resume: boolean;
  /** The HTTP call before the socket; null: the device goes straight to its socket. */
  provision: Provision | null;
}

/**
 * The events a dialect may capture from. `reply_bytes` captured at reply_start or reply_end is the reply's announced
 * audio payload length: a reply that delivers fewer bytes is truncated.
 */
const CAPTURE_EVENTS = ['ready', 'ack', 'pong', 'ping', 'session_end', 'error', 'reply_start', 'reply_end'] as const;
type CaptureEvent = (typeof CAPTURE_EVENTS)[number];

export class DialectError extends WakestormError {
  constructor(message: string) {
    super(message, 2);
  }

  override name = 'DialectError';
}

// ---- templates and matchers ----

export type Vars = Record<string, string | number | boolean | null | undefined>;

const PLACEHOLDER = /\{([a-z_][a-z0-9_]*)\}/g;
const WHOLE = /^\{([a-z_][a-z0-9_]*)\}$/;

/** A string with its placeholders filled (each value passed through `encode`); undefined when one of them is unset. */
export function fill(text: string, vars: Vars, encode: (v: string) => string = (v) => v): string | undefined {
  let missing = false;
  const out = text.replace(PLACEHOLDER, (_, name: string) => {
    const v = vars[name];
    if (v === undefined || v === null || v === '') {
      missing = true;
      return '';
    }
    return encode(String(v));
  });
  return missing ? undefined : out;
}

// Templates, matchers and captures are compiled once per object (a WeakMap by identity) into plain steps: the hot
// path (a keepalive answered, a message matched, thousands a second in a fleet) runs no regular expression and splits
// no path. k6's JS engine runs regular expressions slowly; a per-message regex cost 15 points of a core at 10,000
// devices.
type Node =
  | { k: 'lit'; v: Json }
  | { k: 'var'; name: string }
  | { k: 'text'; parts: string[] }
  | { k: 'arr'; items: Node[] }
  | { k: 'obj'; fields: [string, Node][] };

function compileValue(v: Json): Node {
  if (typeof v === 'string') {
    const whole = WHOLE.exec(v);
    if (whole) return { k: 'var', name: whole[1]! };
    if (!v.includes('{')) return { k: 'lit', v };
    // Alternating literal text and variable names: [text, name, text, name, …, text].
    return { k: 'text', parts: v.split(/\{([a-z_][a-z0-9_]*)\}/) };
  }
  if (Array.isArray(v)) return { k: 'arr', items: v.map(compileValue) };
  if (v && typeof v === 'object') return { k: 'obj', fields: Object.entries(v).map(([k, x]) => [k, compileValue(x)]) };
  return { k: 'lit', v };
}

function fillParts(parts: string[], vars: Vars): string | undefined {
  let out = parts[0]!;
  for (let i = 1; i < parts.length; i += 2) {
    const x = vars[parts[i]!];
    if (x === undefined || x === null || x === '') return undefined;
    out += String(x) + parts[i + 1]!;
  }
  return out;
}

function build(n: Node, vars: Vars): Json | undefined {
  switch (n.k) {
    case 'lit':
      return n.v;
    case 'var': {
      const x = vars[n.name];
      return x === undefined || x === '' ? undefined : x;
    }
    case 'text':
      return fillParts(n.parts, vars);
    case 'arr': {
      const out: Json[] = [];
      for (let i = 0; i < n.items.length; i++) {
        const r = build(n.items[i]!, vars);
        if (r !== undefined) out.push(r);
      }
      return out;
    }
    case 'obj': {
      const o: Record<string, Json> = {};
      const fields = n.fields;
      for (let i = 0; i < fields.length; i++) {
        const f = fields[i]!;
        const r = build(f[1], vars);
        if (r !== undefined) o[f[0]] = r;
      }
      return o;
    }
  }
}

const TEMPLATES = new WeakMap<Template, Node>();

/** The message text a template makes with these variables. */
export function render(t: Template, vars: Vars): string {
  let n = TEMPLATES.get(t);
  if (!n) TEMPLATES.set(t, (n = compileValue(t)));
  return JSON.stringify(build(n, vars));
}

type Check = { path: string[]; want: string | number | boolean | null; varName: string | null };
const MATCHERS = new WeakMap<Matcher, Check[]>();

function compileMatcher(m: Matcher): Check[] {
  return Object.entries(m).map(([path, want]) => {
    const whole = typeof want === 'string' ? WHOLE.exec(want) : null;
    return { path: path.split('.'), want, varName: whole ? whole[1]! : null };
  });
}

const own = (o: object, key: string): boolean => Object.prototype.hasOwnProperty.call(o, key);
/** An array index in a path: a canonical decimal ("0", "12"; not "01", "-1", "length"). */
const INDEX = /^(0|[1-9][0-9]{0,8})$/;

/**
 * One step of a path: an object's own key, or an array's element by its decimal index (`items.0.type`); nothing else
 * (no `length`, nothing inherited), as engine/dialect.go reads a path.
 */
function step(v: unknown, key: string): unknown {
  if (v === null || typeof v !== 'object') return undefined;
  if (Array.isArray(v)) return INDEX.test(key) ? v[Number(key)] : undefined;
  return own(v, key) ? (v as Record<string, unknown>)[key] : undefined;
}

// Indexed loops on the message path: k6's engine allocates an iterator result object per for-of step (a CPU profile
// of 5,000 idle devices showed array iteration at ~18% of k6's CPU).
function at(msg: unknown, path: string[]): unknown {
  let v: unknown = msg;
  for (let i = 0; i < path.length && v !== undefined; i++) v = step(v, path[i]!);
  return v;
}

/** True when the message has every field of the matcher ({name} values compared with the variables). */
export function matches(m: Matcher, msg: unknown, vars: Vars): boolean {
  let checks = MATCHERS.get(m);
  if (!checks) MATCHERS.set(m, (checks = compileMatcher(m)));
  for (let i = 0; i < checks.length; i++) {
    const c = checks[i]!;
    const got = c.path.length === 1 ? step(msg, c.path[0]!) : at(msg, c.path);
    if (c.varName !== null) {
      const v = vars[c.varName];
      if (v !== undefined && v !== null && got !== v) return false;
    } else if (got !== c.want) return false;
  }
  return true;
}

const PATHS = new Map<string, string[]>();

/** The value at a dotted field path of a message (the reading matchers and captures use), or undefined. */
export function pathValue(msg: unknown, path: string): unknown {
  let p = PATHS.get(path);
  if (!p) PATHS.set(path, (p = path.split('.')));
  return at(msg, p);
}

const CAPTURES = new WeakMap<Capture, [string, string[]][]>();

/**
 * Copies the captured fields of a matched message into the variables. A capture reflects the message it came from: a
 * field the message lacks unsets its variable (no stale resume token, reason or error code from an earlier message).
 */
export function capture(c: Capture | undefined, msg: unknown, vars: Vars): void {
  if (!c) return;
  let steps = CAPTURES.get(c);
  if (!steps) CAPTURES.set(c, (steps = Object.entries(c).map(([name, path]) => [name, path.split('.')])));
  for (let i = 0; i < steps.length; i++) {
    const v = at(msg, steps[i]![1]);
    vars[steps[i]![0]] =
      typeof v === 'object' && v !== null ? canonicalJson(v) : (v as string | number | boolean | null | undefined);
  }
}

/** The answer a server request gets from this dialect (the first whose matcher it matches), or null. */
export function answerOf(d: Dialect, msg: unknown, vars: Vars): Answer | null {
  for (let i = 0; i < d.answer.length; i++) if (matches(d.answer[i]!.match, msg, vars)) return d.answer[i]!;
  return null;
}

/** The text a device answers a request with: its captures apply to a copy of the variables, not to the device's own. */
export function renderAnswer(a: Answer, msg: unknown, vars: Vars): string {
  const local: Vars = { ...vars };
  capture(a.capture, msg, local);
  return render(a.send, local);
}

/** The dialect's step a server message matches (`ignore` for one it needs nothing from), or null: unmatched. */
export function stepOf(d: Dialect, msg: unknown, vars: Vars): string | null {
  // The device's own order (device-link.ts onText, then device-session.ts message): the link's messages, a request it
  // answers, reply audio, then the conversation's steps. A frame is labelled with the step the device took for it.
  const r = d.recv;
  if (r.ready && matches(r.ready, msg, vars)) return 'ready';
  if (r.ping && matches(r.ping, msg, vars)) return 'ping';
  if (r.pong && matches(r.pong, msg, vars)) return 'pong';
  if (answerOf(d, msg, vars)) return 'answer';
  const down = d.audio.down;
  if (down.framing === 'json' && matches(down.match!, msg, vars)) return 'audio';
  if (r.ack && r.ack !== 'ready' && matches(r.ack, msg, vars)) return 'ack';
  const steps: [string, Matcher | null][] = [
    ['transcript', r.transcript],
    ['reply_start', r.reply_start],
    ['reply_end', r.reply_end],
    ['session_end', r.session_end],
    ['error', r.error],
  ];
  for (let i = 0; i < steps.length; i++) if (steps[i]![1] && matches(steps[i]![1]!, msg, vars)) return steps[i]![0];
  for (let i = 0; i < r.ignore.length; i++) if (matches(r.ignore[i]!, msg, vars)) return 'ignore';
  return null;
}

/** The line a device prints, once per process and type, for a server message its dialect does not match. */
export const UNMATCHED_NOTE = 'wakestorm-unmatched type=';
/** How a device's log line names a protocol violation it saw (the CLI reads the kinds back from k6.log). */
export const VIOLATION_NOTE = 'wakestorm-violation kind=';
/**
 * Tag values taken from what a server sends (a message type, an error code): cut to 32 safe characters, at most `max`
 * distinct per process, then `other`. A server cannot grow the number of time series in k6 or in a metrics store.
 */
export class BoundedLabels {
  private readonly seen = new Set<string>();

  constructor(private readonly max: number) {}

  label(v: unknown, none = '(none)'): string {
    const label =
      (typeof v === 'string' || typeof v === 'number') && v !== ''
        ? String(v)
            .replace(/[^A-Za-z0-9_.:-]/g, '_')
            .slice(0, 32)
        : none;
    if (this.seen.has(label)) return label;
    if (this.seen.size >= this.max) return 'other';
    this.seen.add(label);
    return label;
  }
}

const UNMATCHED_TYPES = new BoundedLabels(16);

const TYPE_FIELDS = new WeakMap<Dialect, string>();

/**
 * The field that names a message's kind in this dialect: the one most of its server matchers test (`type` for the
 * shipped dialects, `event` for the README's acme), `type` when none stands out.
 */
export function typeField(d: Dialect): string {
  let f = TYPE_FIELDS.get(d);
  if (f) return f;
  const counts = new Map<string, number>();
  const r = d.recv;
  for (const m of [
    r.ready,
    r.ping,
    r.pong,
    r.ack,
    r.transcript,
    r.reply_start,
    r.reply_end,
    r.session_end,
    r.error,
    ...r.ignore,
  ]) {
    if (!m || m === 'ready') continue;
    for (const k of Object.keys(m))
      if (typeof m[k] === 'string' && !WHOLE.test(m[k])) counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  f = [...counts].sort((a, b) => b[1] - a[1] || (a[0] === 'type' ? -1 : 0))[0]?.[0] ?? 'type';
  TYPE_FIELDS.set(d, f);
  return f;
}

/** The `type` tag of an unmatched message: the value of its dialect's type field, bounded (BoundedLabels). */
export function unmatchedType(msg: unknown, d: Dialect): string {
  return UNMATCHED_TYPES.label((msg as Record<string, unknown>)[typeField(d)], 'untyped');
}

// ---- binary framing ----

/** Wraps one audio payload in the dialect's framing. */
export function frameAudio(framing: AudioFraming, payload: Uint8Array, timestampMs: number): ArrayBuffer {
  if (framing === 'raw')
    return payload.buffer.slice(payload.byteOffset, payload.byteOffset + payload.byteLength) as ArrayBuffer;
  const head = framing === 'xiaozhi-v2' ? 16 : 4;
  const out = new ArrayBuffer(head + payload.byteLength);
  const dv = new DataView(out);
  if (framing === 'xiaozhi-v2') {
    dv.setUint16(0, 2);
    dv.setUint16(2, 0);
    dv.setUint32(4, 0);
    dv.setUint32(8, timestampMs >>> 0);
    dv.setUint32(12, payload.byteLength);
  } else {
    dv.setUint8(0, 0);
    dv.setUint8(1, 0);
    dv.setUint16(2, payload.byteLength);
  }
  new Uint8Array(out, head).set(payload);
  return out;
}

/** The audio payload of one binary message in the dialect's framing, or null when the header does not hold together. */
export function unframeAudio(framing: AudioFraming, buf: Uint8Array): Uint8Array | null {
  if (framing === 'raw') return buf;
  const head = framing === 'xiaozhi-v2' ? 16 : 4;
  if (buf.byteLength < head) return null;
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const size = framing === 'xiaozhi-v2' ? dv.getUint32(12) : dv.getUint16(2);
  if (head + size > buf.byteLength) return null;
  return buf.subarray(head, head + size);
}

// ---- validation ----

/** Every placeholder a template may name: what a device fills, and what only a capture sets. */
const PLACEHOLDERS = new Set([...Object.keys(VARIABLES), ...Object.keys(CAPTURED_ONLY)]);

/** One problem in a dialect; validation collects them all and reports them in one line. */
class Problem extends Error {}

function fail(where: string, what: string): never {
  throw new Problem(`${where}: ${what}`);
}

/** Runs one check; a problem is recorded and the check's value is undefined. */
function attempt<T>(problems: string[], check: () => T): T | undefined {
  try {
    return check();
  } catch (e) {
    if (!(e instanceof Problem)) throw e;
    problems.push(e.message);
    return undefined;
  }
}

/** Keys that would reach an object's prototype, refused anywhere in a dialect or profile. */
export const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

function checkPlaceholders(text: string, where: string, known: Set<string>): void {
  for (const m of text.matchAll(PLACEHOLDER)) {
    if (known.has(m[1]!)) continue;
    if (PLACEHOLDERS.has(m[1]!)) fail(where, `uses {${m[1]}}, which the dialect's variables do not declare: add it`);
    fail(where, `unknown placeholder {${m[1]}} (a device fills: ${[...PLACEHOLDERS].sort().join(', ')})`);
  }
  const stray = text.replace(PLACEHOLDER, '');
  if (/[{}]/.test(stray)) fail(where, `"${text.slice(0, 60)}" has a brace that is not a {placeholder}`);
}

function checkJson(v: unknown, where: string, known: Set<string>, depth = 0): void {
  if (depth > 8) fail(where, 'nests deeper than 8 levels');
  if (typeof v === 'string') return checkPlaceholders(v, where, known);
  if (v === null || typeof v === 'number' || typeof v === 'boolean') return;
  if (Array.isArray(v)) return v.forEach((x, i) => checkJson(x, `${where}[${i}]`, known, depth + 1));
  if (typeof v === 'object') {
    return Object.entries(v).forEach(([k, x]) => {
      if (FORBIDDEN_KEYS.has(k)) fail(`${where}.${k}`, 'is not allowed as a key');
      checkJson(x, `${where}.${k}`, known, depth + 1);
    });
  }
  fail(where, 'must be JSON (strings, numbers, booleans, null, lists, objects)');
}

function isObj(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function template(v: unknown, where: string, known: Set<string>, nullable: true): Template | null;
function template(v: unknown, where: string, known: Set<string>, nullable: false): Template;
function template(v: unknown, where: string, known: Set<string>, nullable: boolean): Template | null {
  if (v === null && nullable) return null;
  if (!isObj(v))
    fail(
      where,
      nullable ? 'must be a message template (a JSON object) or null' : 'must be a message template (a JSON object)',
    );
  checkJson(v, where, known);
  return v as Template;
}

/** One field of a capture: a variable name and the field path it takes its value from. */
function captureField(name: string, path: unknown, where: string): void {
  if (!/^[a-z_][a-z0-9_]*$/.test(name) || FORBIDDEN_KEYS.has(name))
    fail(where, 'a variable name is lowercase letters, digits and _');
  if (typeof path !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(path) || path.split('.').some((p) => FORBIDDEN_KEYS.has(p)))
    fail(where, 'must be a field path');
}

function matcher(v: unknown, where: string, known: Set<string>, nullable: boolean): Matcher | null {
  if (v === null && nullable) return null;
  if (!isObj(v) || Object.keys(v).length === 0)
    fail(where, `must be a matcher: a JSON object of fields to match${nullable ? ', or null' : ''}`);
  for (const [k, x] of Object.entries(v)) {
    if (!/^[A-Za-z0-9_.-]+$/.test(k)) fail(`${where}.${k}`, 'a field path is letters, digits, _ - and dots');
    if (k.split('.').some((part) => FORBIDDEN_KEYS.has(part))) fail(`${where}.${k}`, 'is not allowed as a field path');
    if (x !== null && typeof x !== 'string' && typeof x !== 'number' && typeof x !== 'boolean')
      fail(`${where}.${k}`, 'must be a string, number, boolean or null');
    if (typeof x === 'string') checkPlaceholders(x, `${where}.${k}`, known);
  }
  return v as Matcher;
}

/** The placeholder of an uplink audio message that becomes the frame in base64. */
const AUDIO_PLACEHOLDER = '{audio}';

function audioSpec(v: unknown, where: string, dir: 'up' | 'down', known: Set<string>): AudioSpec {
  if (!isObj(v)) fail(where, 'must be { codec, framing, sample_rate }');
  const keys = [
    'codec',
    'framing',
    'sample_rate',
    ...(v.framing === 'json' ? [dir === 'up' ? 'message' : 'match'] : []),
  ];
  if (v.framing === 'json' && dir === 'down') keys.push('field');
  for (const k of Object.keys(v))
    if (!keys.includes(k)) fail(`${where}.${k}`, `is not a field here (fields: ${keys.join(', ')})`);
  if (v.codec !== 'pcm_s16le' && v.codec !== 'opus' && v.codec !== 'mulaw')
    fail(`${where}.codec`, `must be "pcm_s16le", "mulaw" or "opus", got ${JSON.stringify(v.codec)}`);
  if (!AUDIO_FRAMINGS.includes(v.framing as AudioFraming))
    fail(`${where}.framing`, `must be one of ${AUDIO_FRAMINGS.join(', ')}, got ${JSON.stringify(v.framing)}`);
  const rates = v.codec === 'opus' ? OPUS_SAMPLE_RATES : v.codec === 'mulaw' ? [MULAW_RATE] : PCM_RATES;
  if (!rates.includes(v.sample_rate as number))
    fail(`${where}.sample_rate`, `must be one of ${rates.join(', ')} for ${String(v.codec)}`);
  const spec: AudioSpec = { codec: v.codec, framing: v.framing as AudioFraming, sample_rate: v.sample_rate as number };
  if (spec.framing !== 'json') return spec;
  if (spec.codec === 'opus')
    fail(`${where}.codec`, 'opus rides in binary frames only; "json" carries pcm_s16le or mulaw');
  if (dir === 'up') {
    const t = template(v.message, `${where}.message`, new Set([...known, 'audio']), false);
    const count = JSON.stringify(t).split(JSON.stringify(AUDIO_PLACEHOLDER)).length - 1;
    if (count !== 1)
      fail(`${where}.message`, `must hold the string "${AUDIO_PLACEHOLDER}" (the frame in base64) exactly once`);
    spec.message = t;
  } else {
    spec.match = matcher(v.match, `${where}.match`, known, false)!;
    if (
      typeof v.field !== 'string' ||
      !/^[A-Za-z0-9_.-]+$/.test(v.field) ||
      v.field.split('.').some((p) => FORBIDDEN_KEYS.has(p))
    )
      fail(`${where}.field`, 'must be the field path of the base64 audio');
    spec.field = v.field;
  }
  return spec;
}

const TOP = [
  'name',
  'description',
  'lifecycle',
  'variables',
  'connect',
  'send',
  'recv',
  'capture',
  'audio',
  'answer',
  'resume',
  'provision',
];
const SEND = ['hello', 'ping', 'pong', 'wake', 'end_of_speech', 'playback_done', 'abort', 'listen'];
const RECV = [
  'ready',
  'ping',
  'pong',
  'ack',
  'transcript',
  'reply_start',
  'reply_end',
  'session_end',
  'error',
  'ignore',
];

/** The dialect's templates as [path, template] pairs, for the checks that look across steps. */
function templatesOf(send: Partial<Dialect['send']>, where: string): [string, Json][] {
  const out: [string, Json][] = [];
  for (const [k, t] of Object.entries(send)) {
    if (Array.isArray(t)) t.forEach((x, i) => out.push([`${where}.send.${k}[${i}]`, x]));
    else if (t) out.push([`${where}.send.${k}`, t]);
  }
  return out;
}

function usesVar(v: Json, name: string): boolean {
  if (typeof v === 'string') return v.includes(`{${name}}`);
  if (Array.isArray(v)) return v.some((x) => usesVar(x, name));
  if (v && typeof v === 'object') return Object.values(v).some((x) => usesVar(x, name));
  return false;
}

function declaredVariables(v: unknown, where: string): string[] {
  const fills = `a device fills: ${Object.keys(VARIABLES).join(', ')}`;
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string'))
    fail(where, `must list the variables the dialect uses, e.g. ["device_id", "token"] (${fills})`);
  const names = v as string[];
  for (const n of names) {
    if (CAPTURED_ONLY[n]) fail(where, `{${n}} comes from capture.${CAPTURED_ONLY[n]}.${n}, not from the device`);
    if (!Object.hasOwn(VARIABLES, n)) fail(where, `declares {${n}}, which no device fills (${fills})`);
  }
  return names;
}

/**
 * Checks a dialect from a file or a module. Every problem is reported at once, in one line, each with its JSON path
 * and what it must be; a step the device depends on that the dialect cannot carry out is refused with the reason.
 */
export function validateDialect(raw: unknown, where: string): Dialect {
  if (!isObj(raw)) throw new DialectError(`dialect ${where}: must be a JSON object`);
  const problems: string[] = [];
  const check = <T>(fn: () => T) => attempt(problems, fn);
  for (const k of Object.keys(raw))
    if (!TOP.includes(k)) check(() => fail(`${where}.${k}`, `is not a dialect field (fields: ${TOP.join(', ')})`));
  const name = raw.name;
  check(() => {
    if (typeof name !== 'string' || !/^[a-z][a-z0-9_-]{0,39}$/.test(name))
      fail(`${where}.name`, 'must be a lowercase name of at most 40 characters');
  });
  check(() => typeof raw.description === 'string' || fail(`${where}.description`, 'must be a string'));
  check(
    () =>
      raw.lifecycle === 'persistent' ||
      raw.lifecycle === 'per_wake' ||
      fail(`${where}.lifecycle`, 'must be "persistent" or "per_wake"'),
  );
  // The variables the dialect declares (each one a device fills), and those only captures set: nothing else.
  const declared = check(() => declaredVariables(raw.variables, `${where}.variables`)) ?? [];
  const all = new Set([...declared, ...Object.keys(CAPTURED_ONLY)]);
  const c = raw.connect;
  if (!isObj(c)) check(() => fail(`${where}.connect`, 'must be { path, identify, hello_path?, query?, headers? }'));
  else {
    check(() => {
      if (typeof c.path !== 'string' || !c.path.startsWith('/'))
        fail(`${where}.connect.path`, 'must be a path starting with /');
      checkPlaceholders(c.path, `${where}.connect.path`, all);
    });
    check(
      () =>
        c.identify === 'profile' ||
        c.identify === 'hello' ||
        fail(`${where}.connect.identify`, 'must be "profile" or "hello"'),
    );
    check(() => {
      if (c.hello_path !== undefined && (typeof c.hello_path !== 'string' || !c.hello_path.startsWith('/')))
        fail(`${where}.connect.hello_path`, 'must be a path starting with /');
    });
    for (const key of ['query', 'headers'] as const) {
      const m = c[key];
      if (m === undefined) continue;
      if (!isObj(m)) {
        check(() => fail(`${where}.connect.${key}`, 'must be an object of strings'));
        continue;
      }
      for (const [k, v] of Object.entries(m)) {
        check(() => {
          if (typeof v !== 'string') fail(`${where}.connect.${key}.${k}`, 'must be a string');
          if (key === 'headers' && !/^[A-Za-z0-9-]+$/.test(k))
            fail(`${where}.connect.headers.${k}`, 'is not a header name');
          checkPlaceholders(v, `${where}.connect.${key}.${k}`, all);
        });
      }
    }
  }
  const s = isObj(raw.send)
    ? raw.send
    : (check(() => fail(`${where}.send`, `must be an object with ${SEND.join(', ')}`)), {});
  for (const k of Object.keys(s))
    if (!SEND.includes(k)) check(() => fail(`${where}.send.${k}`, `is not a step (steps: ${SEND.join(', ')})`));
  const wake = s.wake;
  // Nothing said at the wake only where nothing acknowledges it (a server that hears the speech itself).
  const r0 = isObj(raw.recv) ? raw.recv : {};
  check(
    () =>
      (Array.isArray(wake) && (wake.length > 0 || r0.ack === null)) ||
      fail(
        `${where}.send.wake`,
        'must be a list of message templates, empty only when recv.ack is null (the server acknowledges nothing)',
      ),
  );
  const opt = (k: string) => check(() => template(s[k] ?? null, `${where}.send.${k}`, all, true)) ?? null;
  const send: Dialect['send'] = {
    hello: opt('hello'),
    ping: opt('ping'),
    pong: opt('pong'),
    wake: Array.isArray(wake)
      ? wake.map((w, i) => check(() => template(w, `${where}.send.wake[${i}]`, all, false))!)
      : [],
    end_of_speech: opt('end_of_speech'),
    playback_done: opt('playback_done'),
    abort: opt('abort'),
    listen: opt('listen'),
  };
  if (isObj(c) && c.identify === 'hello' && !send.hello && s.hello == null)
    check(() => fail(`${where}.send.hello`, 'is needed when connect.identify is "hello"'));
  const r = isObj(raw.recv)
    ? raw.recv
    : (check(() => fail(`${where}.recv`, `must be an object with ${RECV.join(', ')}`)), {});
  for (const k of Object.keys(r))
    if (!RECV.includes(k)) check(() => fail(`${where}.recv.${k}`, `is not an event (events: ${RECV.join(', ')})`));
  const m = (k: string, nullable: boolean) =>
    check(() => matcher(nullable ? (r[k] ?? null) : r[k], `${where}.recv.${k}`, all, nullable)) ?? null;
  const ignore = r.ignore ?? [];
  if (!Array.isArray(ignore))
    check(() => fail(`${where}.recv.ignore`, 'must be a list of matchers (messages the device needs nothing from)'));
  const recv: Dialect['recv'] = {
    ready: m('ready', true),
    ping: m('ping', true),
    pong: m('pong', true),
    ack: r.ack === 'ready' ? 'ready' : m('ack', true),
    transcript: m('transcript', true),
    reply_start: m('reply_start', true),
    reply_end: m('reply_end', false)!,
    session_end: m('session_end', true),
    error: m('error', true),
    ignore: Array.isArray(ignore)
      ? ignore.map((x, i) => check(() => matcher(x, `${where}.recv.ignore[${i}]`, all, false))!).filter(Boolean)
      : [],
  };
  const cap = raw.capture ?? {};
  if (!isObj(cap)) check(() => fail(`${where}.capture`, 'must be an object: event → { variable: field path }'));
  else {
    for (const [ev, mm] of Object.entries(cap)) {
      check(() => {
        if (!(CAPTURE_EVENTS as readonly string[]).includes(ev))
          fail(`${where}.capture.${ev}`, `captures from ${CAPTURE_EVENTS.join(', ')}`);
        if (!isObj(mm)) fail(`${where}.capture.${ev}`, 'must be { variable: "field.path" }');
      });
      if (!isObj(mm)) continue;
      for (const [k, v] of Object.entries(mm)) {
        check(() => captureField(k, v, `${where}.capture.${ev}.${k}`));
      }
    }
  }
  const caps = (isObj(cap) ? cap : {}) as Record<string, Record<string, unknown>>;
  // A matcher on a variable the device cannot have set yet would match anything there (an unset variable is no check):
  // the ready comes before any conversation, the ack before the session's id.
  const notYet: [keyof Dialect['recv'], string[]][] = [
    ['ready', ['wake_id', 'session_id']],
    ['ack', ['session_id']],
  ];
  for (const [ev, vars] of notYet) {
    const m = recv[ev];
    if (!m || typeof m !== 'object' || Array.isArray(m)) continue;
    for (const [path, want] of Object.entries(m as Matcher)) {
      const v = typeof want === 'string' ? WHOLE.exec(want)?.[1] : undefined;
      // The ready of a per-wake channel comes after the wake: its wake_id is set.
      const set = ev === 'ready' && raw.lifecycle === 'per_wake' && v === 'wake_id';
      if (v && vars.includes(v) && !set)
        check(() =>
          fail(
            `${where}.recv.${ev}.${path}`,
            `matches {${v}}, which the device has not set when ${ev === 'ready' ? 'the link comes up' : 'the wake is acknowledged'}: it would match anything`,
          ),
        );
    }
  }
  // A step the server does not have captures nothing.
  for (const ev of ['ready', 'ack', 'reply_start'] as const)
    if ((r as Record<string, unknown>)[ev] == null && caps[ev])
      check(() =>
        fail(`${where}.capture.${ev}`, `captures from recv.${ev}, which is null (the server has no such message)`),
      );
  if (recv.ack === 'ready' && raw.lifecycle !== 'per_wake')
    check(() => fail(`${where}.recv.ack`, '"ready" (the handshake acknowledges the wake) needs lifecycle "per_wake"'));
  // Steps that depend on others: refused with the reason rather than failing as timeouts in a run.
  if (recv.pong && !send.ping) {
    check(() =>
      fail(
        `${where}.recv.pong`,
        "a pong answers the device's own ping, but send.ping is null: add send.ping or set recv.pong to null",
      ),
    );
  }
  for (const [v, ev] of Object.entries(CAPTURED_ONLY)) {
    for (const [path, t] of templatesOf(send, where)) {
      if (usesVar(t, v) && !Object.keys(caps[ev] ?? {}).includes(v)) {
        check(() =>
          fail(
            path,
            `uses {${v}}, which only capture.${ev}.${v} can set, and your dialect has none: add it or leave the field out`,
          ),
        );
      }
    }
  }
  const answer: Answer[] = [];
  const ans = raw.answer ?? [];
  if (!Array.isArray(ans)) check(() => fail(`${where}.answer`, 'must be a list of { match, capture?, send }'));
  else
    ans.forEach((x: unknown, i) => {
      const at = `${where}.answer[${i}]`;
      if (!isObj(x)) return check(() => fail(at, 'must be { match, capture?, send }'));
      for (const k of Object.keys(x))
        if (!['match', 'capture', 'send'].includes(k))
          check(() => fail(`${at}.${k}`, 'is not a field (match, capture, send)'));
      const capture = (x.capture ?? {}) as Record<string, unknown>;
      if (!isObj(capture)) check(() => fail(`${at}.capture`, 'must be { variable: "field.path" }'));
      const local = new Set(all);
      for (const [k, v] of Object.entries(isObj(capture) ? capture : {}))
        check(() => {
          captureField(k, v, `${at}.capture.${k}`);
          local.add(k);
        });
      const match = check(() => matcher(x.match, `${at}.match`, all, false));
      const send = check(() => template(x.send, `${at}.send`, local, false));
      if (match && send) answer.push({ match, capture: capture as Capture, send });
    });
  const a = raw.audio;
  let audio: Dialect['audio'] | undefined;
  if (!isObj(a)) check(() => fail(`${where}.audio`, 'must be { up, down }'));
  else {
    const up = check(() => audioSpec(a.up, `${where}.audio.up`, 'up', all));
    const down = check(() => audioSpec(a.down, `${where}.audio.down`, 'down', all));
    if (up && down) audio = { up, down };
  }
  check(() => typeof raw.resume === 'boolean' || fail(`${where}.resume`, 'must be true or false'));
  if (raw.resume === true) {
    const ready = Object.keys(caps.ready ?? {});
    const missing = ['resume_token', 'resumed', 'resumed_session'].filter((k) => !ready.includes(k));
    if (missing.length)
      check(() =>
        fail(
          `${where}.resume`,
          `is true, but capture.ready lacks ${missing.join(', ')}: a device cannot tell whether the server kept its session`,
        ),
      );
  }
  const provision =
    raw.provision == null ? null : (check(() => provisionSpec(raw.provision, `${where}.provision`, all)) ?? null);
  if (problems.length) {
    throw new DialectError(
      `dialect ${problems.length === 1 ? problems[0] : `${where}: ${problems.length} problems: ${problems.join('; ')}`}`,
    );
  }
  return {
    name: name as string,
    description: raw.description as string,
    lifecycle: raw.lifecycle as Dialect['lifecycle'],
    variables: declared,
    connect: c as Dialect['connect'],
    send,
    recv,
    capture: cap,
    audio: audio!,
    answer,
    resume: raw.resume as boolean,
    provision,
  };
}

/** Variables a provision answer may set beside the dialect's own: where the socket goes. */
const PROVISION_ONLY = ['ws_url'];

function provisionSpec(v: unknown, where: string, known: Set<string>): Provision {
  const keys = ['when', 'method', 'path', 'headers', 'body', 'capture'];
  if (!isObj(v)) fail(where, `must be { ${keys.join(', ')} } or null`);
  for (const k of Object.keys(v))
    if (!keys.includes(k)) fail(`${where}.${k}`, `is not a field (fields: ${keys.join(', ')})`);
  if (v.when !== 'boot' && v.when !== 'connect') fail(`${where}.when`, 'must be "boot" or "connect"');
  if (v.method !== 'GET' && v.method !== 'POST') fail(`${where}.method`, 'must be "GET" or "POST"');
  if (typeof v.path !== 'string' || !v.path.startsWith('/')) fail(`${where}.path`, 'must be a path starting with /');
  checkPlaceholders(v.path, `${where}.path`, known);
  if (v.headers !== undefined) {
    if (!isObj(v.headers)) fail(`${where}.headers`, 'must be an object of strings');
    for (const [k, h] of Object.entries(v.headers)) {
      if (!/^[A-Za-z0-9-]+$/.test(k)) fail(`${where}.headers.${k}`, 'is not a header name');
      if (typeof h !== 'string') fail(`${where}.headers.${k}`, 'must be a string');
      checkPlaceholders(h, `${where}.headers.${k}`, known);
    }
  }
  const body = template(v.body ?? null, `${where}.body`, known, true);
  if (body && v.method === 'GET') fail(`${where}.body`, 'a GET has no body: null, or method "POST"');
  if (!isObj(v.capture)) fail(`${where}.capture`, 'must be { variable: "field.path" } (ws_url, token, …)');
  for (const [k, path] of Object.entries(v.capture)) {
    captureField(k, path, `${where}.capture.${k}`);
    if (!PROVISION_ONLY.includes(k) && !known.has(k))
      fail(
        `${where}.capture.${k}`,
        `sets {${k}}, which the dialect's variables do not declare (or ws_url: the socket's URL)`,
      );
  }
  return {
    when: v.when,
    method: v.method,
    path: v.path,
    ...(v.headers ? { headers: v.headers as Record<string, string> } : {}),
    body,
    capture: v.capture as Capture,
  };
}

// ---- where dialects come from ----

/** The dialects wakestorm ships, as JSON files in core/dialects/ (the repository path each runtime reads). */
export const SHIPPED_DIALECTS = [
  'wakestorm',
  'xiaozhi',
  'xiaozhi-button',
  'openai-realtime',
  'twilio-media-streams',
] as const;
export const DEFAULT_DIALECT = 'wakestorm';

function shippedDialectPath(name: string): string {
  return `core/dialects/${name}.json`;
}

/**
 * A dialect by name (shipped) or by path to a JSON file, validated. `readShipped` reads a shipped one by its
 * repository path (each runtime knows where the repository is); `readFile` reads a user's file.
 */
export function loadDialect(
  spec: string,
  readFile: (path: string) => string,
  readShipped: (repoPath: string) => string,
): Dialect {
  const shipped = (SHIPPED_DIALECTS as readonly string[]).includes(spec);
  if (!shipped && !spec.endsWith('.json'))
    throw new DialectError(
      `dialect "${spec}": give a shipped dialect (${SHIPPED_DIALECTS.join(', ')}) or a .json file`,
    );
  let text: string;
  try {
    text = shipped ? readShipped(shippedDialectPath(spec)) : readFile(spec);
  } catch {
    throw new DialectError(`dialect ${spec}: cannot read it`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new DialectError(`dialect ${spec}: not valid JSON`);
  }
  return validateDialect(raw, spec);
}
