// `wakestorm try`: one device, one conversation, against a running server, every step printed: what the device sent,
// what came back and which step of the dialect it matched, the timings, and where it stalled. The device is the one a
// run uses: the native engine by default (its frame trace, engine/trace.go, and its records as k6 would record them),
// or with --engine k6 the TypeScript device (core/device.ts) on Node's clock; a dialect is debugged here before a
// fleet runs it.
import { preflightUpgrade, redactToken } from './preflight.ts';
import { runTls } from './tls-trust.ts';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Device } from '../core/device.ts';
import type { SocketLike, WakeSchedule } from '../core/device-env.ts';
import { loadDialect, stepOf, typeField, type Dialect, type Vars } from '../core/dialect.ts';
import { WakestormError } from '../core/errors.ts';
import type { DeviceMetricName, MetricSink } from '../core/metric-names.ts';
import { parseProfileMix, PROFILES, type Profile } from '../core/profiles.ts';
import { checkProfileAgainstDialect, isLoopbackUrl, overrideBackoff } from '../core/run-config.ts';
import WebSocket from 'ws';
import { engineStart, EngineRecords, type EngineRecord } from '../core/engine-contract.ts';
import { DEFAULT_DIALECT } from '../core/dialect.ts';
import { engineCapabilities, engineRefusal, startEngine, type DeviceEngine } from './engine.ts';
import { nodeAudio, nodeDeviceEnv, wsSocket } from './node-devices.ts';
import { ROOT } from './run.ts';

export interface TryOptions {
  serverUrl: string;
  dialect?: string;
  profile?: string;
  token?: string;
  backoff?: string;
  seed?: string;
  /** Which device talks: the native engine (default) or the TypeScript device (k6's). */
  engine?: DeviceEngine;
  /** Give up after this long (ms) with the step it stalled at. */
  timeoutMs?: number;
  /** A wss:// server's CA, or no verification (scripts/tls-trust.ts). */
  ca?: string;
  insecureTls?: boolean;
  /** Where a dialect's provision call goes; none: the server over http. */
  provisionUrl?: string;
  out?: (line: string) => void;
}

class TryError extends WakestormError {
  constructor(message: string) {
    super(message, 2);
  }

  override name = 'TryError';
}

/** Trends worth a line of their own as they are measured. */
const TIMINGS: DeviceMetricName[] = [
  'provision_latency',
  'connect_time',
  'handshake_time',
  'wake_ack_latency',
  'endpointing_latency',
  'processing_latency',
  'response_latency',
  'ping_rtt',
  'playback_stall_time',
  'barge_in_stop_time',
];

const short = (s: string, n = 140) => (s.length > n ? `${s.slice(0, n)}…` : s);

/**
 * The one profile `try` uses: --profile (its first entry), else the shipped profile made for the dialect, else the
 * first shipped one the dialect can carry (recommended first): a dialect with no JSON ping gets a profile that sends none.
 */
function pickProfile(spec: string | undefined, dialect: Dialect | null): Profile {
  if (spec) return parseProfileMix(spec, (p) => readFileSync(p, 'utf8'))[0]!.profile;
  const all = Object.values(PROFILES);
  const order = [
    ...all.filter((p) => p.dialect !== undefined && p.dialect === dialect?.name),
    PROFILES.recommended!,
    // A dialect that says the end of speech itself gets a device that does (a server without VAD waits for it).
    ...all
      .filter((p) => (p.dialect ?? DEFAULT_DIALECT) === DEFAULT_DIALECT)
      .sort((a, b) =>
        dialect?.send.end_of_speech
          ? Number(b.end_of_speech === 'explicit') - Number(a.end_of_speech === 'explicit')
          : 0,
      ),
  ];
  for (const p of order) {
    try {
      if (dialect) checkProfileAgainstDialect(p, dialect);
      return p;
    } catch {
      /* the next one */
    }
  }
  return PROFILES.recommended!;
}

/** Runs one conversation; resolves with its exit code: 0 completed, 1 stalled or failed. */
export async function tryConversation(o: TryOptions): Promise<number> {
  const out = o.out ?? ((l: string) => console.log(l));
  if (!/^wss?:\/\/[^/]+$/.test(o.serverUrl.replace(/\/+$/, '')))
    throw new TryError(`--server-url must be like ws://127.0.0.1:8080, got '${o.serverUrl}'`);
  if (!isLoopbackUrl(o.serverUrl) && process.env.ALLOW_REMOTE !== '1')
    throw new TryError(
      `--server-url ${o.serverUrl} is not loopback: set ALLOW_REMOTE=1 to aim at another host on purpose`,
    );
  const load = (spec: string) =>
    loadDialect(
      spec,
      (p) => readFileSync(p, 'utf8'),
      (p) => readFileSync(join(ROOT, p), 'utf8'),
    );
  // --dialect speaks for the device as it does for a run's fleet; else the profile's own, else wakestorm.
  let profile = o.profile ? pickProfile(o.profile, null) : null;
  const dialect = load(o.dialect ?? profile?.dialect ?? 'wakestorm');
  profile ??= pickProfile(undefined, dialect);
  if (o.backoff) profile = overrideBackoff([{ profile, weight: 1 }], o.backoff, '--backoff')[0]!.profile;
  checkProfileAgainstDialect(profile, dialect);
  // One upgrade first, as the device will make it: a refusal that no retry changes (401, 403, 404) is one line, exit 2.
  const tls = runTls(o);
  await preflightUpgrade({
    serverUrl: o.serverUrl,
    profile: o.profile,
    dialect: o.dialect,
    token: o.token,
    tls: tls.trust,
    provisionUrl: o.provisionUrl,
  });
  const t0 = Date.now();
  // Engine events carry their own time (the engine's clock is Unix ms); the TypeScript device's are now.
  let eventAt: number | null = null;
  const at = () => `+${String(Math.round((eventAt ?? Date.now()) - t0)).padStart(6)} ms`;
  const timeoutMs = o.timeoutMs ?? 45_000;
  out(
    `wakestorm try: one ${profile.name} device, dialect ${dialect.name}, against ${o.serverUrl} (gives up after ${timeoutMs / 1000} s)`,
  );

  // What the device reached, for the stall report.
  const seen = {
    open: false,
    ready: false,
    acked: false,
    replyAudio: false,
    ended: false,
    heard: false,
    whole: true,
    unmatched: 0,
  };
  let lastServer = '';
  let outcome: 'completed' | 'failed' | null = null;
  let failure = '';
  let vars: Vars = {};
  let upAudio = 0;
  let downAudio = 0;
  const flushAudio = () => {
    if (upAudio) out(`${at()}  → audio: ${upAudio} frame(s)`);
    if (downAudio) out(`${at()}  ← audio: ${downAudio} frame(s)`);
    upAudio = downAudio = 0;
  };
  let finish: () => void = () => {};
  const done = new Promise<void>((r) => (finish = r));

  const metrics: MetricSink = {
    add(name, value, tags) {
      if (TIMINGS.includes(name)) {
        flushAudio();
        out(`${at()}    ${name} = ${Math.round(value)} ms`);
      }
      if (name === 'wake_success' && value === 0) failure = 'the wake was not acknowledged in 10 s';
      if (name === 'response_latency') seen.heard = true;
      if (name === 'reply_truncated' && value === 1) {
        seen.whole = false;
        out(`${at()}    the reply was truncated: less audio than announced, or none`);
      }
      if (name === 'reply_stutter' && value === 1) {
        seen.whole = false;
        out(`${at()}    the reply stuttered: playback ran dry mid-reply`);
      }
      if (name === 'unmatched_messages') {
        seen.unmatched++;
        out(`${at()}    ↑ matches no step of dialect ${dialect.name} (${typeField(dialect)} ${tags.type})`);
      }
      // A barge-in ends the conversation as the user asked (the dialect's abort, the server's stop measured): done.
      if (name === 'barge_in_stop_time') {
        outcome = 'completed';
        seen.ended = true;
        finish();
      }
      if (name === 'sessions_completed') {
        outcome = 'completed';
        seen.ended = true;
        finish();
      }
      if (name === 'sessions_dropped') {
        outcome = 'failed';
        failure = `the session was dropped (${tags.reason})`;
        finish();
      }
      if (name === 'unplanned_drops' || name === 'connection_drops') {
        if (outcome) return;
        failure = `the link was lost (close code ${tags.code ?? '?'}${tags.cause ? `, ${tags.cause}` : ''})`;
      }
    },
  };
  // Every frame, whichever device talks: text in full (shortened) with the step it matched, audio counted.
  const view = {
    connect(url: string, headerNames: string[]) {
      const shown = headerNames.length ? ` headers: ${headerNames.join(', ')}` : '';
      out(`${at()}  connect ${redactToken(url.replace(/([?&](token|resume)=)[^&]+/g, '$1…'), o.token)}${shown}`);
    },
    /** The dialect's provision call before the socket (xiaozhi's OTA check), and its answer. */
    http(method: string, url: string) {
      out(`${at()}  ${method} ${redactToken(url, o.token)} (the dialect's provision call)`);
    },
    httpAnswer(status: number, err: string) {
      out(`${at()}  ← ${err ? `no answer: ${err}` : `HTTP ${status}`}`);
    },
    open() {
      seen.open = true;
      // A dialect with no ready message: the link is up when the socket opens.
      if (dialect.recv.ready === null) seen.ready = true;
      out(`${at()}  socket open`);
    },
    send(text: string) {
      flushAudio();
      out(`${at()}  → ${short(text)}`);
    },
    recv(text: string, step: string | null) {
      flushAudio();
      if (step === 'ready') seen.ready = true;
      if (step === 'ack') seen.acked = true;
      lastServer = short(text, 100);
      out(`${at()}  ← ${short(text)}  [${step ?? 'no step'}]`);
    },
    closed(code: number | undefined) {
      flushAudio();
      out(`${at()}  closed ${code ?? '(no code)'}`);
    },
  };
  const isJson = (text: string): unknown => {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return undefined;
    }
  };
  const wake: WakeSchedule = { mode: 'once', interval_ms: 0, first_min_ms: 500, first_max_ms: 500 };
  const engine = o.engine ?? 'native';
  let stopDevice: () => Promise<void>;
  if (engine === 'k6') {
    // The TypeScript device (k6's), on Node's clock: labels by the dialect's step order (stepOf).
    const openSocket = (url: string, headers: Record<string, string>): SocketLike => {
      view.connect(url, Object.keys(headers));
      const ws = wsSocket(url, headers, tls.trust);
      const wrapped: SocketLike = Object.create(ws) as SocketLike;
      wrapped.send = (data) => {
        if (typeof data === 'string') view.send(data);
        else upAudio++;
        ws.send(data);
      };
      ws.onopen = () => {
        view.open();
        wrapped.onopen?.();
      };
      ws.onmessage = (ev) => {
        if (typeof ev.data === 'string') {
          const msg = isJson(ev.data);
          const step = msg && typeof msg === 'object' ? stepOf(dialect, msg, vars) : null;
          view.recv(ev.data, msg === undefined ? 'not JSON' : step);
        } else {
          downAudio++;
          seen.replyAudio = true;
        }
        wrapped.onmessage?.(ev);
      };
      ws.onclose = (ev) => {
        view.closed(ev.code);
        wrapped.onclose?.(ev);
      };
      ws.onerror = (ev) => wrapped.onerror?.(ev);
      return wrapped;
    };
    const env = nodeDeviceEnv('try-1', metrics, o.seed ?? '1', { openSocket, warn: () => {} });
    const device = new Device(
      {
        id: 'try-1',
        baseUrl: o.serverUrl.replace(/\/+$/, ''),
        provisionUrl: o.provisionUrl,
        token: o.token,
        profile,
        dialect,
        wake,
        connectTimeoutMs: 10_000,
      },
      env,
    );
    vars = device.vars;
    device.start(0);
    stopDevice = () => Promise.resolve(device.stop());
  } else {
    stopDevice = await tryOnEngine(o, profile, dialect, wake, timeoutMs, {
      metrics,
      event: (t, kind, a) => {
        eventAt = t;
        if (kind === 'connect') view.connect(a[0] as string, a[1] as string[]);
        else if (kind === 'open') view.open();
        else if (kind === 'http') view.http(a[0] as string, a[1] as string);
        else if (kind === 'http_answer') view.httpAnswer(a[0] as number, a[1] as string);
        else if (kind === 'send') view.send(a[0] as string);
        else if (kind === 'send_binary') upAudio++;
        else if (kind === 'recv') {
          const step = a[1] as string | undefined;
          view.recv(
            a[0] as string,
            step === undefined ? (isJson(a[0] as string) === undefined ? 'not JSON' : null) : step || null,
          );
        } else if (kind === 'recv_binary') {
          downAudio++;
          seen.replyAudio = true;
        } else if (kind === 'closed') view.closed(a[0] as number);
        eventAt = null;
      },
      failed: (line) => {
        failure = line;
        finish();
      },
    });
  }
  const timer = setTimeout(finish, timeoutMs);
  await done;
  clearTimeout(timer);
  // A per-wake channel closes after its reply: let the last frames print.
  await new Promise((r) => setTimeout(r, 200));
  await stopDevice();
  flushAudio();
  // Completed as the user hears it: the session ended complete, a reply was heard, whole and smooth.
  if (outcome === 'completed' && seen.heard && seen.whole && !seen.unmatched) {
    out(`wakestorm try: the conversation completed in ${Date.now() - t0} ms`);
    return 0;
  }
  if (outcome === 'completed') {
    const why = !seen.heard
      ? 'no reply audio was heard'
      : !seen.whole
        ? 'the reply was not whole and smooth'
        : `${seen.unmatched} server message(s) matched no step`;
    out(
      `wakestorm try: the session ended, but ${why}: check the dialect's recv steps against the messages marked [no step]`,
    );
    return 1;
  }
  const where = !seen.open
    ? 'the socket never opened (server down, refused, or a wrong path: check --server-url and connect.path)'
    : !seen.ready
      ? "the server never sent what the dialect's recv.ready matches"
      : !seen.acked && dialect.recv.ack !== 'ready' && dialect.recv.ack !== null
        ? "the wake was never acknowledged (nothing matched the dialect's recv.ack)"
        : !seen.replyAudio
          ? "no reply audio came (check the dialect's recv.transcript and recv.reply_start)"
          : 'the reply never ended as the dialect says (recv.reply_end, recv.session_end)';
  out(`wakestorm try: stalled: ${failure || where}${lastServer ? `; the last server message: ${lastServer}` : ''}`);
  return 1;
}

interface EngineView {
  metrics: MetricSink;
  /** A trace event: its time (Unix ms), kind and details (engine/trace.go); a `recv` gets its step as a second detail. */
  event: (t: number, kind: string, detail: unknown[]) => void;
  /** The engine refused the start or went away. */
  failed: (line: string) => void;
}

/**
 * Runs the one device in the native engine, as a run does: the engine started for this command, the start built by
 * core/engine-contract.ts with its frame trace on, the records turned into metrics by the code k6 uses. Resolves with
 * the device's stop once the engine has it.
 */
async function tryOnEngine(
  o: TryOptions,
  profile: Profile,
  dialect: Dialect,
  wake: WakeSchedule,
  timeoutMs: number,
  v: EngineView,
): Promise<() => Promise<void>> {
  const why = engineRefusal(engineCapabilities(), {
    wake: wake.mode,
    lifecycles: [dialect.lifecycle],
    audio: [dialect.audio.up, dialect.audio.down].map((a) => `${a.codec}/${a.framing}`),
  });
  if (why) throw new TryError(`${why.replace(/use --engine k6/, 'try --engine k6')}`);
  const engine = await startEngine(undefined, runTls(o).env);
  const now = Date.now();
  const cfg = {
    devices: 1,
    profiles: [{ profile, weight: 1 }],
    dialects: { [profile.dialect ?? DEFAULT_DIALECT]: dialect },
    rampMs: 0,
    idPrefix: 'try',
    targetUrls: [o.serverUrl.replace(/\/+$/, '')],
    token: o.token,
    seed: o.seed ?? '1',
    wake,
    durationMs: timeoutMs + 5000,
    tls: { server_name: '', insecure: !!o.insecureTls },
    provisionUrl: o.provisionUrl,
  };
  const paths = { pcm: join(ROOT, 'audio', 'utterance.pcm'), opus: join(ROOT, 'audio', 'utterance.opus') };
  const start = { ...engineStart(cfg, nodeAudio(), paths, 0, 1, now, now), trace: true };
  const records = new EngineRecords({ metrics: v.metrics, phase: () => 'steady', warn: () => {} });
  const ws = new WebSocket(engine.url);
  let stopped: () => void = () => {};
  const gone = new Promise<void>((r) => (stopped = r));
  let pending: { t: number; detail: unknown[]; held: [number, string, unknown[]][] } | null = null;
  const flush = (step: unknown) => {
    const p = pending!;
    pending = null;
    v.event(p.t, 'recv', step === undefined ? p.detail : [...p.detail, step]);
    for (const [t, kind, detail] of p.held) v.event(t, kind, detail);
  };
  engine.onExit((m) => v.failed(m));
  ws.on('open', () => ws.send(JSON.stringify(start)));
  ws.on('error', (e) => v.failed(`the device engine's control socket failed: ${e.message}`));
  ws.on('close', () => stopped());
  ws.on('message', (data: Buffer) => {
    const m = JSON.parse(data.toString()) as {
      type: string;
      message?: string;
      records?: EngineRecord[];
      trace?: unknown[][];
    };
    if (m.type === 'error') return v.failed(m.message ?? 'the device engine refused the start');
    for (const [t, , kind, ...detail] of m.trace ?? []) {
      // A text frame's step is the device's own: the `step` event that follows its processing (maybe in the next
      // batch). What the device sent while processing it comes between and is shown after it.
      if (kind === 'step') {
        if (pending) flush(detail[0]);
        continue;
      }
      if (pending && kind !== 'recv') {
        pending.held.push([t as number, kind as string, detail]);
        continue;
      }
      if (pending) flush(undefined);
      if (kind === 'recv') pending = { t: t as number, detail, held: [] };
      else v.event(t as number, kind as string, detail);
    }
    for (const r of m.records ?? []) records.record(r);
    if (m.type === 'stopped') {
      if (pending) flush(undefined);
      ws.close();
    }
  });
  return async () => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'stop' }));
    else ws.terminate();
    const bound = new Promise<void>((r) => setTimeout(r, 3000).unref());
    await Promise.race([gone, bound]);
    ws.terminate();
    await engine.stop();
  };
}
