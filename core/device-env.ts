// What a virtual device is given (socket factory, clock, timers, randomness, metric sink, audio) and what its two
// parts share: the device's options, its metric tags, and its named timers. No runtime here: k6 and Node each pass
// their own env (scenarios/lib/k6-fleet.ts, scripts/node-devices.ts).
import { fill, render, type Dialect, type Provision, type Vars } from './dialect.ts';
import type { DeviceMetricName, MetricSink } from './metric-names.ts';
import { OPUS_FRAME_MS, type OpusClip } from './opus.ts';
import { pcmDurationMs } from './pcm.ts';
import { metricPhase } from './device-rules.ts';
import type { Phase } from './phases.ts';
import { DEFAULT_WAKE_WORD, type Profile } from './profiles.ts';

/** The browser-like socket both k6/websockets and the Node adapter provide. */
export interface SocketLike {
  /** 0 connecting, 1 open, 2 closing, 3 closed. */
  readonly readyState: number;
  binaryType: string;
  onopen: ((ev?: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  /** A WebSocket pong arrived (an answer to ping()); only the first-frame probe listens (core/device-link.ts). */
  onpong?: (() => void) | null;
  /** Bytes sent but not yet written to the network (the WebSocket API's `bufferedAmount`). */
  readonly bufferedAmount?: number;
  /** The subprotocol the server's 101 named ('' for none): the WebSocket API's `protocol`. */
  readonly protocol?: string;
  send(data: string | ArrayBuffer | ArrayBufferView): void;
  ping(): void;
  close(code?: number, reason?: string): void;
}

export type TimerHandle = unknown;

/** Uplink audio prepared once per process (k6: per VU) and shared by its devices. */
export interface AudioFrames {
  /** The utterance cut into frames of one size, plus which frames are silent to an energy VAD. */
  frames(frameBytes: number): { speech: ArrayBuffer[]; silent: boolean[]; silence: ArrayBuffer };
  /** The same utterance as real Opus packets (60 ms each), for dialects whose uplink is Opus. */
  opus(): OpusClip;
}

/** An HTTP request a device makes (the dialect's provision call). */
export interface HttpRequest {
  method: 'GET' | 'POST';
  url: string;
  headers: Record<string, string>;
  body?: string;
}

/** Its answer: a status and the body's text, or why there was none. */
export type HttpAnswer = { status: number; body: string } | { error: string };

export interface DeviceEnv {
  /** Makes an HTTP request (bounded by the device's own connect timeout); `done` once, later, with the answer. */
  request?(req: HttpRequest, done: (res: HttpAnswer) => void): void;
  /**
   * `name`: the URL with the dialect's path template unfilled ({device_id} stays): the tag k6 puts on the socket's
   * metrics, one value per target and path, never one per device.
   */
  openSocket(url: string, headers: Record<string, string>, name: string): SocketLike;
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(h: TimerHandle): void;
  random: () => number;
  metrics: MetricSink;
  audio: AudioFrames;
  /** When the network really failed (chaos runs know it); null when unknown. */
  linkDiedAt?(): number | null;
  /** The phase of the chaos run [from, to] fell in (core/phases.ts); steady when absent (no timeline). */
  phase?(from: number, to: number): Phase;
  log?(line: string): void;
  /**
   * The socket library can lose the first frame a server sends on the upgrade: k6/websockets (v2.2.0, websockets.go
   * establishConnection) starts its read pump before it queues the open event and drops a frame read before the open.
   * The link then probes each open (FIRST_FRAME_GRACE_MS in core/device-link.ts) and keeps the tally here, one per VU.
   * Absent for the device engine.
   */
  firstFrameProbe?: FirstFrameProbe;
  /** A rare diagnostic a person should see (an unmatched server message type, once per process): k6 prints it. */
  warn?(line: string): void;
}

/** 'poisson': exponential gaps with mean interval_ms; 'fixed': every interval_ms; 'once': one wake; 'off'. */
export const WAKE_MODES = ['poisson', 'fixed', 'once', 'off'] as const;

export interface WakeSchedule {
  mode: (typeof WAKE_MODES)[number];
  interval_ms: number;
  /** The first wake comes uniformly within [first_min_ms, first_max_ms] after start. */
  first_min_ms: number;
  first_max_ms: number;
}

export interface DeviceOptions {
  id: string;
  /** ws:// base, e.g. ws://127.0.0.1:18000 */
  baseUrl: string;
  token?: string;
  profile: Profile;
  /** How the device's steps are said on the wire (core/dialect.ts). */
  dialect: Dialect;
  wake: WakeSchedule;
  /** Give up a connection attempt that has not reached `connected` after this long. */
  connectTimeoutMs?: number;
  /** http(s):// base of the dialect's provision call (the run's --provision-url); none: baseUrl over http. */
  provisionUrl?: string;
}

const PROFILE_TAGS = new Map<string, Record<string, string>>();
const CHAOS_TAGS = new Map<string, Record<Phase, Record<string, string>>>();

/** A device's stable pseudo-MAC and client UUID from its id (xiaozhi's Device-Id and Client-Id headers). */
function idHash(id: string, seed: number): number {
  let h = seed >>> 0;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 16777619) >>> 0;
  return h;
}
const hex = (n: number, len: number) => n.toString(16).padStart(len, '0').slice(-len);

/**
 * A device's own wire variables (all but its token and the conversation's): what the dialects' templates, matchers and
 * headers may use. Stable per device id, so the k6 device and the native engine (which is sent these) say the same.
 */
export function deviceVars(id: string, profile: Profile, dialect: Dialect): Vars {
  const a = idHash(id, 2166136261);
  const b = idHash(id, 374761393);
  const all: Vars = {
    device_id: id,
    profile: profile.name,
    protocol_version: 1,
    // A locally administered unicast MAC (02:…) and a version-4-shaped UUID, both stable per device id.
    mac: `02:${hex(a >>> 24, 2)}:${hex(a >>> 16, 2)}:${hex(a >>> 8, 2)}:${hex(a, 2)}:${hex(b, 2)}`,
    client_id: `${hex(a, 8)}-${hex(b >>> 16, 4)}-4${hex(b, 3)}-8${hex(a ^ b, 3)}-${hex(Math.imul(a, 31) >>> 0, 8)}${hex(b >>> 8, 4)}`,
    wake_word: profile.wake_word ?? DEFAULT_WAKE_WORD,
    listen_mode: profile.end_of_speech === 'vad' ? 'auto' : 'manual',
    codec: dialect.audio.up.codec,
    // One uplink frame's duration: 60 ms Opus packets, or the profile's PCM frame.
    frame_ms: dialect.audio.up.codec === 'opus' ? OPUS_FRAME_MS : pcmDurationMs(profile.frame_bytes),
    sample_rate: dialect.audio.up.sample_rate,
  };
  // What the dialect declares, and nothing else (core/variables.ts lists where each comes from).
  const out: Vars = {};
  for (const k of dialect.variables) if (k in all) out[k] = all[k];
  return out;
}

/**
 * The upgrade a device makes: URL (the dialect's path, or its hello path when the device identifies in a hello, then
 * the dialect's query on every kind of connect; a parameter or header whose placeholder is unset is left out),
 * headers, and the socket's metric name (the path unfilled). The device's link and the CLI's pre-flight upgrade
 * (scripts/preflight.ts) both make it here; engine/device.go connect makes the same.
 */
export function connectRequest(
  d: Dialect,
  p: Pick<Profile, 'connect'>,
  vars: Vars,
  baseUrl: string,
): { url: string; headers: Record<string, string>; name: string; byHello: boolean } {
  // How the device identifies: in the path (profile 'path') or in a hello (profile 'hello', or a hello dialect).
  const byHello = d.connect.identify === 'hello' || p.connect === 'hello';
  const path = byHello && d.connect.identify === 'profile' ? (d.connect.hello_path ?? d.connect.path) : d.connect.path;
  // A provision answer's ws_url: its path and query, on the run's target (so the faults still reach the socket).
  const given = typeof vars.ws_url === 'string' ? wsPathOf(vars.ws_url) : null;
  if (given !== null)
    return { url: `${baseUrl}${given}`, headers: connectHeaders(d, vars), name: `${baseUrl}${path}`, byHello };
  let url = `${baseUrl}${fill(path, vars, encodeURIComponent) ?? path}`;
  if (d.connect.query) {
    const q = Object.entries(d.connect.query).flatMap(([k, t]) => {
      const v = fill(t, vars, encodeURIComponent);
      return v === undefined ? [] : [`${encodeURIComponent(k)}=${v}`];
    });
    if (q.length) url += `?${q.join('&')}`;
  }
  return { url, headers: connectHeaders(d, vars), name: `${baseUrl}${path}`, byHello };
}

function connectHeaders(d: Dialect, vars: Vars): Record<string, string> {
  return filledHeaders(d.connect.headers, vars);
}

/** Header templates filled; one whose placeholder is unset is left out. */
function filledHeaders(templates: Record<string, string> | undefined, vars: Vars): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [k, t] of Object.entries(templates ?? {})) {
    const v = fill(t, vars);
    if (v !== undefined) headers[k] = v;
  }
  return headers;
}

/**
 * The provision call a device makes (core/device-link.ts, and the CLI's pre-flight, as connectRequest is for the
 * upgrade). It goes to `base` as given when that names a path (a firmware's configured OTA URL,
 * http://host:8003/api/ota/), else to the dialect's path on that origin (http://host:8000 + /xiaozhi/ota/).
 */
export function provisionRequest(pv: Provision, vars: Vars, base: string): HttpRequest {
  const path = fill(pv.path, vars, encodeURIComponent) ?? pv.path;
  return {
    method: pv.method,
    url: /^https?:\/\/[^/]+\/./i.test(base) ? base : `${base.replace(/\/$/, '')}${path}`,
    headers: filledHeaders(pv.headers, vars),
    body: pv.body ? render(pv.body, vars) : undefined,
  };
}

/** The path and query of a ws(s):// or http(s):// URL (or a path itself); null when it is neither. */
function wsPathOf(u: string): string | null {
  if (u.startsWith('/')) return u;
  const m = /^(?:wss?|https?):\/\/[^/?#]*(\/[^#]*)?/i.exec(u);
  return m ? (m[1] ?? '/') : null;
}

/** One device's options, env, metric tags and wire variables, shared by its link and its session. */
export class DeviceContext {
  /** The variables the dialect's templates and matchers use ({device_id}, {session_id}, {resume_token}, …). */
  readonly vars: Vars;
  /** { profile }: one object per profile, shared by its devices (metrics only read it). */
  readonly tags: Record<string, string>;
  /** { profile, chaos: steady|during|recovery }: one object per profile and phase, shared. */
  private readonly chaosTags: Record<Phase, Record<string, string>>;
  /** Plain fields, not getters: the message and audio paths read them per message, and a getter is a call in k6. */
  readonly dialect: Dialect;
  readonly profile: Profile;

  constructor(
    readonly opts: DeviceOptions,
    readonly env: DeviceEnv,
  ) {
    this.dialect = opts.dialect;
    this.profile = opts.profile;
    const name = opts.profile.name;
    this.tags = PROFILE_TAGS.get(name) ?? PROFILE_TAGS.set(name, { profile: name }).get(name)!;
    this.chaosTags =
      CHAOS_TAGS.get(name) ??
      CHAOS_TAGS.set(name, {
        steady: { profile: name, chaos: 'steady' },
        during: { profile: name, chaos: 'during' },
        recovery: { profile: name, chaos: 'recovery' },
      }).get(name)!;
    this.vars = deviceVars(opts.id, opts.profile, opts.dialect);
    if (opts.dialect.variables.includes('token')) this.vars.token = opts.token;
  }

  /** The phase an outcome spanning [from, to] fell in. */
  phaseOf(from: number, to: number): Phase {
    return this.env.phase?.(from, to) ?? 'steady';
  }

  /**
   * An outcome that spanned [from, to], labelled as DEVICE_RULES.metric_phases says: tagged with the phase it fell
   * in, counted only in steady state, or with no phase.
   */
  outcome(name: DeviceMetricName, value: number, from: number, to: number, extra?: Record<string, string>): void {
    const rule = metricPhase(name);
    let tags = this.tags;
    if (rule !== null) {
      const phase = this.phaseOf(from, to);
      if (rule === 'steady_only' && phase !== 'steady') return;
      if (rule === 'tagged') tags = this.chaosTags[phase];
    }
    this.env.metrics.add(name, value, extra ? { ...tags, ...extra } : tags);
  }

  /** A latency that spanned [from, to]. */
  trendSpan(name: DeviceMetricName, from: number, to: number): void {
    this.outcome(name, to - from, from, to);
  }

  count(name: DeviceMetricName, n = 1, extra?: Record<string, string>): void {
    this.env.metrics.add(name, n, extra ? { ...this.tags, ...extra } : this.tags);
  }

  trend(name: DeviceMetricName, v: number): void {
    this.env.metrics.add(name, v, this.tags);
  }
}

/**
 * The first-frame probe's state for the devices of one VU (core/device-link.ts FIRST_FRAME_GRACE_MS). A reopen is the
 * tester's retry, never judged; so that a server that withholds its ready cannot hide behind it, reopens are
 * budgeted at one plus one per REOPEN_EVERY probed opens (k6 dropped 4 first frames in 87,678 opens under GOGC=1):
 * past the budget a silent open waits for the connect timeout and counts against the server, as without the probe.
 */
export class FirstFrameProbe {
  static readonly REOPEN_EVERY = 5000;
  /** Off once a server's first frame was seen after its pong: the probe cannot tell a drop from such a server. */
  armed = true;
  shown = false;
  private opens = 0;
  private reopens = 0;

  /** A socket opened and is probed. */
  opened(): void {
    this.opens++;
  }

  /** Takes one reopen from the budget; false when it is spent. */
  takeReopen(): boolean {
    if (this.reopens >= 1 + Math.floor(this.opens / FirstFrameProbe.REOPEN_EVERY)) return false;
    this.reopens++;
    return true;
  }
}

/** Named one-shot timers: setting one replaces it; `h` is open for a hot path that re-arms its own timer. */
export class Timers<K extends string> {
  /** Each timer's handle, null when it is not set (TimerHandle is unknown, so it holds null too). */
  readonly h: Record<K, TimerHandle>;

  constructor(
    private readonly env: DeviceEnv,
    names: readonly K[],
  ) {
    this.h = Object.fromEntries(names.map((n) => [n, null])) as Record<K, TimerHandle>;
  }

  set(name: K, fn: () => void, ms: number): void {
    this.clear(name);
    this.h[name] = this.env.setTimeout(() => {
      this.h[name] = null;
      fn();
    }, ms);
  }

  clear(name: K): void {
    const h = this.h[name];
    if (h !== null) this.env.clearTimeout(h);
    this.h[name] = null;
  }

  clearAll(): void {
    for (const k of Object.keys(this.h) as K[]) this.clear(k);
  }
}
