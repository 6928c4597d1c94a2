// `wakestorm try`: one device, one conversation, against a running server, every step printed: what the device sent,
// what came back and which step of the dialect it matched, the timings, and where it stalled. The device is the same
// state machine a run uses (core/device.ts), on Node's clock; a dialect is debugged here before a fleet runs it.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Device } from '../core/device.ts';
import type { SocketLike, WakeSchedule } from '../core/device-env.ts';
import { loadDialect, stepOf, typeField, type Dialect, type Vars } from '../core/dialect.ts';
import { WakestormError } from '../core/errors.ts';
import type { DeviceMetricName, MetricSink } from '../core/metric-names.ts';
import { parseProfileMix, type Profile } from '../core/profiles.ts';
import { checkProfileAgainstDialect, isLoopbackUrl, overrideBackoff } from '../core/run-config.ts';
import { nodeDeviceEnv, wsSocket } from './node-devices.ts';
import { ROOT } from './run.ts';

export interface TryOptions {
  serverUrl: string;
  dialect?: string;
  profile?: string;
  token?: string;
  backoff?: string;
  seed?: string;
  /** Give up after this long (ms) with the step it stalled at. */
  timeoutMs?: number;
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
  'connect_time',
  'handshake_time',
  'wake_ack_latency',
  'endpointing_latency',
  'processing_latency',
  'response_latency',
  'ping_rtt',
  'playback_stall_time',
];

const short = (s: string, n = 140) => (s.length > n ? `${s.slice(0, n)}…` : s);

/** The one profile `try` uses: --profile (its first entry), else the shipped profile made for the dialect. */
function pickProfile(spec: string | undefined, dialect: Dialect | null): Profile {
  const name = spec ?? (dialect?.name === 'xiaozhi' ? 'xiaozhi-esp32' : 'recommended');
  const shares = parseProfileMix(name, (p) => readFileSync(p, 'utf8'));
  return shares[0]!.profile;
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
  const t0 = Date.now();
  const at = () => `+${String(Date.now() - t0).padStart(6)} ms`;
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
  // Every frame through a logging socket: text in full (shortened), audio counted.
  const openSocket = (url: string, headers: Record<string, string>): SocketLike => {
    const shown = Object.keys(headers).length ? ` headers: ${Object.keys(headers).join(', ')}` : '';
    out(`${at()}  connect ${url.replace(/([?&](token|resume)=)[^&]+/g, '$1…')}${shown}`);
    const ws = wsSocket(url, headers);
    const wrapped: SocketLike = Object.create(ws) as SocketLike;
    wrapped.send = (data) => {
      if (typeof data === 'string') {
        flushAudio();
        out(`${at()}  → ${short(data)}`);
      } else upAudio++;
      ws.send(data);
    };
    ws.onopen = () => {
      seen.open = true;
      out(`${at()}  socket open`);
      wrapped.onopen?.();
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data === 'string') {
        flushAudio();
        let msg: unknown = null;
        try {
          msg = JSON.parse(ev.data);
        } catch {
          /* shown as not JSON */
        }
        const step = msg && typeof msg === 'object' ? stepOf(dialect, msg, vars) : null;
        if (step === 'ready') seen.ready = true;
        if (step === 'ack') seen.acked = true;
        lastServer = short(ev.data, 100);
        out(`${at()}  ← ${short(ev.data)}  [${msg === null ? 'not JSON' : (step ?? 'no step')}]`);
      } else {
        downAudio++;
        seen.replyAudio = true;
      }
      wrapped.onmessage?.(ev);
    };
    ws.onclose = (ev) => {
      flushAudio();
      out(`${at()}  closed ${ev.code ?? '(no code)'}`);
      wrapped.onclose?.(ev);
    };
    ws.onerror = (ev) => wrapped.onerror?.(ev);
    return wrapped;
  };
  const wake: WakeSchedule = { mode: 'once', interval_ms: 0, first_min_ms: 500, first_max_ms: 500 };
  const env = nodeDeviceEnv('try-1', metrics, o.seed ?? '1', { openSocket, warn: () => {} });
  const device = new Device(
    {
      id: 'try-1',
      baseUrl: o.serverUrl.replace(/\/+$/, ''),
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
  const timer = setTimeout(finish, timeoutMs);
  await done;
  clearTimeout(timer);
  // A per-wake channel closes after its reply: let the last frames print.
  await new Promise((r) => setTimeout(r, 200));
  flushAudio();
  device.stop();
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
      : !seen.acked && dialect.recv.ack !== 'ready'
        ? "the wake was never acknowledged (nothing matched the dialect's recv.ack)"
        : !seen.replyAudio
          ? "no reply audio came (check the dialect's recv.transcript and recv.reply_start)"
          : 'the reply never ended as the dialect says (recv.reply_end, recv.session_end)';
  out(`wakestorm try: stalled: ${failure || where}${lastServer ? `; the last server message: ${lastServer}` : ''}`);
  return 1;
}
