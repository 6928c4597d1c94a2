// The conformance corpus (core/traces/*.json, docs/traces.md) replayed on both device engines: the TypeScript device
// (core/device.ts) on a fake clock and scripted sockets here, the native engine's device by `wakestorm-engine replay`
// (engine/replay.go) with the start core/engine-contract.ts builds, its records turned into metrics by the same code
// k6 uses. Both give one list of events; a trace's `expect` is that list.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Device } from '../../core/device.ts';
import type { DeviceEnv, HttpAnswer, WakeSchedule } from '../../core/device-env.ts';
import { validateDialect, type Dialect } from '../../core/dialect.ts';
import { engineStart, EngineRecords, type EngineRecord } from '../../core/engine-contract.ts';
import type { Phase } from '../../core/phases.ts';
import { PROFILES, validateProfile, type Profile } from '../../core/profiles.ts';
import { parseWake } from '../../core/run-config.ts';
import { deviceRandom } from '../../core/rng.ts';
import { nodeAudio, nodeDialect } from '../../scripts/node-devices.ts';
import { FakeClock, FakeSocket } from './fake-env.ts';

export const TRACES_DIR = new URL('../../core/traces/', import.meta.url).pathname;
const AUDIO = new URL('../../audio/', import.meta.url).pathname;

/** A step of the server's side: [at ms, op, arg]. */
type Step = [number, string, unknown?, unknown?];

export interface Trace {
  about: string;
  /**
   * A shipped dialect's name, a dialect object, or { from: name, ...changes } (a change to connect, send, recv or
   * capture replaces only the keys it names); validated as a user's file is.
   */
  dialect: string | Record<string, unknown>;
  /** A shipped profile's name, or { from: name, ...fields replaced }. */
  profile: string | ({ from: string } & Record<string, unknown>);
  /** WAKE as the CLI takes it (off, once:1s, poisson:20s, fixed:5s); off when absent. */
  wake?: string;
  token?: string;
  delay_ms?: number;
  /** Fault windows [from, to, label] in ms: the phase of a span (during, then recovery until `recovered`). */
  phases?: [number, number, Phase][];
  /** When the network really died (disconnect_detect_time), ms. */
  died_at?: number;
  script: Step[];
  /** The clock runs to here after the script; then the device is stopped. */
  until: number;
  expect?: unknown[][];
}

const START = 1_000_000;
const BASE_URL = 'ws://127.0.0.1:9';
const ID = 'trace-0';

function dialectOf(t: Trace): Dialect {
  if (typeof t.dialect === 'string') return nodeDialect(t.dialect);
  const { from, ...change } = t.dialect;
  if (typeof from !== 'string') return validateDialect(t.dialect, 'trace dialect');
  const base = JSON.parse(readFileSync(new URL(`../../core/dialects/${from}.json`, import.meta.url), 'utf8')) as Record<
    string,
    unknown
  >;
  const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
  for (const [k, v] of Object.entries(change)) base[k] = isObj(v) && isObj(base[k]) ? { ...base[k], ...v } : v;
  return validateDialect(base, 'trace dialect');
}

function profileOf(t: Trace, d: Dialect): Profile {
  const base = typeof t.profile === 'string' ? t.profile : t.profile.from;
  const p = PROFILES[base];
  if (!p) throw new Error(`trace profile: unknown ${base}`);
  if (typeof t.profile === 'string') return p;
  const change: Record<string, unknown> = { ...t.profile };
  delete change.from;
  return validateProfile({ ...p, dialect: d.name, ...change }, 'trace profile');
}

function wakeOf(t: Trace): WakeSchedule {
  return parseWake(t.wake ?? 'off', { mode: 'off', interval_ms: 0, first_min_ms: 0, first_max_ms: 0 });
}

/** The phase of a span [from, to] (ms since the trace's start) under the trace's windows. */
function phaseIn(t: Trace) {
  return (from: number, to: number): Phase => {
    for (const [a, b, p] of t.phases ?? []) if (from <= b && to >= a) return p;
    return 'steady';
  };
}

/** The TypeScript device's events for a trace. */
export function replayTs(t: Trace): unknown[][] {
  const dialect = dialectOf(t);
  const profile = profileOf(t, dialect);
  const clock = new FakeClock();
  clock.now = START;
  const events: unknown[][] = [];
  const at = () => clock.now - START;
  const add = (...e: unknown[]) => events.push([at(), ...e]);
  const sockets: ScriptSocket[] = [];
  // The fake socket of the unit tests, its frames logged as the trace's events instead of kept.
  class ScriptSocket extends FakeSocket {
    opened = false;
    constructor(
      readonly n: number,
      url: string,
      headers: Record<string, string>,
    ) {
      super(url, headers);
    }
    override send(d: string | ArrayBuffer | ArrayBufferView) {
      if (typeof d !== 'string') return void add('binary', this.n, d.byteLength);
      try {
        add('send', this.n, abbreviate(JSON.parse(d)));
      } catch {
        add('send_text', this.n, d);
      }
    }
    override ping() {
      add('ping', this.n);
    }
    override close(code?: number) {
      // The engine's Close(0) drops the TCP connection, as close() with no code does here. A socket whose upgrade never
      // completed has nothing to close (engine/replay.go says the same).
      if (this.opened) add('close', this.n, code ?? 0);
      this.readyState = 3;
    }
  }
  const phase = phaseIn(t);
  // Provision calls waiting for the script's [t, "http", status, body] or [t, "http_error", why], oldest first.
  const requests: ((res: HttpAnswer) => void)[] = [];
  const env: DeviceEnv = {
    request: (req, done) => {
      add('http', req.method, req.url, req.headers, req.body === undefined ? null : JSON.parse(req.body));
      requests.push(done);
    },
    openSocket: (url, headers) => {
      const s = new ScriptSocket(sockets.length, url, headers);
      sockets.push(s);
      add('open', s.n, url, headers);
      return s;
    },
    now: () => clock.now,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: deviceRandom('trace', ID),
    metrics: { add: (name, value, tags) => add('metric', name, value, tags) },
    audio: nodeAudio(),
    linkDiedAt: () => (t.died_at === undefined ? null : START + t.died_at),
    phase: (from, to) => phase(from - START, to - START),
    log: (line) => add('log', line),
  };
  const d = new Device({ id: ID, baseUrl: BASE_URL, token: t.token, profile, dialect, wake: wakeOf(t) }, env);
  d.start(t.delay_ms ?? 0);
  for (const [when, op, arg, extra] of t.script) {
    if (when < at()) throw new Error(`script step at ${when} is before ${at()}`);
    clock.advance(when - at());
    if (op === 'stop') {
      d.stop();
      continue;
    }
    if (op === 'http' || op === 'http_error') {
      const done = requests.shift();
      if (!done) throw new Error(`script step ${op} at ${when} with no request waiting`);
      done(
        op === 'http_error'
          ? { error: String(arg) }
          : { status: arg as number, body: typeof extra === 'string' ? extra : JSON.stringify(extra ?? null) },
      );
      continue;
    }
    const s = sockets[sockets.length - 1];
    if (!s) throw new Error(`script step ${op} at ${when} with no socket open`);
    if (op === 'open') {
      s.readyState = 1;
      s.opened = true;
      // [t, "open", "chat"]: the 101 names a subprotocol.
      s.protocol = typeof arg === 'string' ? arg : '';
      s.onopen?.();
    } else if (op === 'text') s.onmessage?.({ data: typeof arg === 'string' ? arg : JSON.stringify(arg) });
    else if (op === 'binary') {
      const bytes = typeof arg === 'number' ? new Uint8Array(arg) : Buffer.from(String(arg), 'hex');
      s.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
    } else if (op === 'close') {
      s.readyState = 3;
      s.onclose?.({ code: arg as number });
    } else throw new Error(`unknown script op ${op}`);
  }
  if (t.until > at()) clock.advance(t.until - at());
  d.stop();
  return events;
}

/** The engine's start for a trace's one device, as a VU builds it (core/engine-contract.ts). */
function startOf(t: Trace) {
  const dialect = dialectOf(t);
  const profile = profileOf(t, dialect);
  const cfg = {
    devices: 1,
    profiles: [{ profile, weight: 1 }],
    dialects: { [profile.dialect ?? 'wakestorm']: dialect },
    rampMs: 0,
    idPrefix: 'trace',
    targetUrls: [BASE_URL],
    token: t.token,
    seed: 'trace',
    wake: wakeOf(t),
    durationMs: 0,
    tls: { server_name: '', insecure: false },
  };
  const start = engineStart(
    cfg,
    nodeAudio(),
    { pcm: join(AUDIO, 'utterance.pcm'), opus: join(AUDIO, 'utterance.opus') },
    0,
    1,
    0,
    0,
  );
  start.devices[0]!.delay_ms = t.delay_ms ?? 0;
  return start;
}

/** What the engine's replay reads for a trace: its start (as a VU builds it), the server's script, the clock's end. */
export function engineInput(t: Trace): string {
  return JSON.stringify({ start: startOf(t), script: t.script, until: t.until });
}

/** The native engine's events for each trace (one `wakestorm-engine replay` process for all of them). */
export function replayEngine(engine: string, traces: Trace[]): (unknown[][] | Error)[] {
  const input = traces.map(engineInput).join('\n');
  const out = execFileSync(engine, ['replay'], { input: `${input}\n`, maxBuffer: 256 << 20, timeout: 60_000 });
  const lines = out.toString().trim().split('\n');
  return traces.map((t, i) => {
    const r = JSON.parse(lines[i] ?? '{"error":"no answer"}') as { events?: unknown[][]; error?: string };
    if (r.error !== undefined) return new Error(r.error);
    const events: unknown[][] = [];
    const phase = phaseIn(t);
    let now = 0;
    const records = new EngineRecords({
      metrics: { add: (name, value, tags) => events.push([now, 'metric', name, value, tags]) },
      phase,
      linkDiedAt: () => t.died_at ?? null,
      warn: () => {},
    });
    for (const e of r.events!) {
      now = e[0] as number;
      if (e[1] === 'record') records.record(e[2] as EngineRecord);
      else if (e[1] === 'send')
        events.push([now, 'send', e[2], abbreviate(typeof e[3] === 'string' ? JSON.parse(e[3]) : e[3])]);
      else events.push(e);
    }
    return events;
  });
}

/**
 * A sent message as the corpus keeps it: a string longer than 200 characters (base64 audio in JSON) becomes its length
 * and the sum of its character codes, so a trace holds the frame's identity, not kilobytes of it (engine/corpus_test.go
 * abbreviated: the same rule).
 */
function abbreviate(v: unknown): unknown {
  if (typeof v === 'string') {
    if (v.length <= 200) return v;
    let sum = 0;
    for (let i = 0; i < v.length; i++) sum = (sum + v.charCodeAt(i)) % 1_000_000;
    return `<${v.length} chars, sum ${sum}>`;
  }
  if (Array.isArray(v)) return v.map(abbreviate);
  if (v !== null && typeof v === 'object')
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, abbreviate(x)]));
  return v;
}

/**
 * A list of events in the form a trace compares: what went on the wire in its order, then the metrics and log lines
 * sorted (two engines may record the outcomes of one instant in another order).
 */
export function normalize(events: unknown[][]): { wire: string[]; outcomes: string[] } {
  const wire: string[] = [];
  const outcomes: string[] = [];
  for (const e of events) {
    const t = Math.round((e[0] as number) * 1000) / 1000;
    const rest = e.slice(1).map((x) => (typeof x === 'number' ? Math.round(x * 1000) / 1000 : x));
    const line = JSON.stringify([t, ...rest], sortKeys);
    if (e[1] === 'metric' || e[1] === 'log') outcomes.push(line);
    else wire.push(line);
  }
  outcomes.sort();
  return { wire, outcomes };
}

/** JSON.stringify replacer: object keys in order, so equal objects print equal. */
function sortKeys(_: string, v: unknown): unknown {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
  return Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1)));
}

export function loadTraces(): { file: string; trace: Trace }[] {
  return readdirSync(TRACES_DIR)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((file) => ({ file, trace: JSON.parse(readFileSync(join(TRACES_DIR, file), 'utf8')) as Trace }));
}

/** The Go suite's copy of the corpus (engine/testdata/corpus.jsonl): each trace's engine input and expected events. */
export const GO_CORPUS = new URL('../../engine/testdata/corpus.jsonl', import.meta.url).pathname;

/**
 * The corpus as `go test` replays it without Node (engine/corpus_test.go): per trace its file name, the engine's
 * input (the start core/engine-contract.ts builds) and the expected events (metrics as name and value: the tags are
 * made on k6's side, and test/unit/conformance.test.ts checks them). Generated by record-traces.ts; the
 * conformance test fails when it is stale.
 */
export function goCorpus(traces: { file: string; trace: Trace }[]): string {
  return traces
    .map(({ file, trace }) => {
      const input = JSON.parse(engineInput(trace)) as { start: { audio: { pcm_path: string; opus_path: string } } };
      // The utterance by its path from engine/ (where go test runs): the same file on every checkout.
      input.start.audio.pcm_path = '../audio/utterance.pcm';
      input.start.audio.opus_path = '../audio/utterance.opus';
      // With fault windows, which steady-only records k6 keeps is decided on k6's side (the Go test skips them).
      const phased = (trace.phases ?? []).length > 0 ? { phased: true } : {};
      return `${JSON.stringify({ file, input, ...phased, expect: trace.expect ?? [] })}\n`;
    })
    .join('');
}
