// What a virtual device is given (socket factory, clock, timers, randomness, metric sink, audio) and what its two
// parts share: the device's options, its metric tags, and its named timers. No runtime here: k6 and Node each pass
// their own env (scenarios/lib/k6-fleet.ts, scripts/node-devices.ts).
import type { DeviceMetricName, MetricSink } from './metric-names.ts';
import type { Profile } from './profiles.ts';

/** The browser-like socket both k6/websockets and the Node adapter provide. */
export interface SocketLike {
  /** 0 connecting, 1 open, 2 closing, 3 closed. */
  readonly readyState: number;
  binaryType: string;
  onopen: ((ev?: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string | ArrayBuffer | ArrayBufferView): void;
  ping(): void;
  close(code?: number, reason?: string): void;
}

export type TimerHandle = unknown;

/** Uplink audio prepared once per process (k6: per VU) and shared by its devices. */
export interface AudioFrames {
  /** The utterance cut into frames of one size, plus which frames are silent to an energy VAD. */
  frames(frameBytes: number): { speech: ArrayBuffer[]; silent: boolean[]; silence: ArrayBuffer };
}

export interface DeviceEnv {
  openSocket(url: string, headers: Record<string, string>): SocketLike;
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(h: TimerHandle): void;
  random(): number;
  metrics: MetricSink;
  audio: AudioFrames;
  /** When the network really failed (chaos runs know it); null when unknown. */
  linkDiedAt?(): number | null;
  /** True when [from, to] overlaps a fault window of the timeline (plus grace): what happened then was planned. */
  planned?(from: number, to: number): boolean;
  log?(line: string): void;
}

export interface WakeSchedule {
  /** 'poisson': exponential gaps with mean interval_ms; 'fixed': every interval_ms; 'once': one wake; 'off'. */
  mode: 'poisson' | 'fixed' | 'once' | 'off';
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
  wake: WakeSchedule;
  /** Give up a connection attempt that has not reached `connected` after this long. */
  connectTimeoutMs?: number;
}

const PROFILE_TAGS = new Map<string, Record<string, string>>();
const CHAOS_TAGS = new Map<string, [Record<string, string>, Record<string, string>]>();

/** One device's options, env and metric tags, shared by its link and its session. */
export class DeviceContext {
  /** { profile }: one object per profile, shared by its devices (metrics only read it). */
  readonly tags: Record<string, string>;
  /** { profile, chaos: off } and { profile, chaos: on }. */
  readonly chaosTags: [Record<string, string>, Record<string, string>];

  constructor(readonly opts: DeviceOptions, readonly env: DeviceEnv) {
    const name = opts.profile.name;
    this.tags = PROFILE_TAGS.get(name) ?? PROFILE_TAGS.set(name, { profile: name }).get(name)!;
    this.chaosTags = CHAOS_TAGS.get(name) ?? CHAOS_TAGS.set(name, [{ profile: name, chaos: 'off' }, { profile: name, chaos: 'on' }]).get(name)!;
  }

  get profile(): Profile {
    return this.opts.profile;
  }

  /** Profile and chaos:on|off tags for an outcome spanning [from, to]. */
  outcomeTags(from: number, to: number): Record<string, string> {
    return this.chaosTags[this.env.planned?.(from, to) ? 1 : 0];
  }

  count(name: DeviceMetricName, n = 1, extra?: Record<string, string>): void {
    this.env.metrics.add(name, n, extra ? { ...this.tags, ...extra } : this.tags);
  }

  trend(name: DeviceMetricName, v: number): void {
    this.env.metrics.add(name, v, this.tags);
  }
}

/** Named one-shot timers: setting one replaces it; `h` is open for a hot path that re-arms its own timer. */
export class Timers<K extends string> {
  readonly h: Record<K, TimerHandle | null>;

  constructor(private readonly env: DeviceEnv, names: readonly K[]) {
    this.h = Object.fromEntries(names.map((n) => [n, null])) as Record<K, TimerHandle | null>;
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
