// Reads a run's parameters from k6's -e variables (or any env object), with loopback defaults and one-line errors.
import { parseDuration } from './duration.ts';
import { WakestormError } from './errors.ts';
import { BACKOFF_POLICIES, type BackoffPolicyName } from './backoff.ts';
import { parseProfileMix, PROFILES, validateProfile, type Profile, type ProfileShare } from './profiles.ts';
import type { WakeSchedule } from './device-env.ts';
import type { RunVars } from './run-contract.ts';
import { DEFAULT_DIALECT, DialectError, loadDialect, type Dialect } from './dialect.ts';

export interface RunConfig {
  devices: number;
  devicesPerVu: number;
  vus: number;
  durationMs: number;
  rampMs: number;
  /** The first of targetUrls (health checks, reports). */
  targetUrl: string;
  /** TARGET_URL as a comma-separated list: device i connects to targetUrls[i % length] (Toxiproxy shards). */
  targetUrls: string[];
  /** The first of toxiproxyUrls. */
  toxiproxyUrl: string;
  /** TOXIPROXY_URL as a comma-separated list: a timeline applies to every one of them. */
  toxiproxyUrls: string[];
  token?: string;
  seed: string;
  profileSpec: string;
  profiles: ProfileShare[];
  wake: WakeSchedule;
  idPrefix: string;
  /** The native device engine's control socket; undefined: the devices run in k6. */
  engineUrl?: string;
  /** Every dialect the fleet's profiles speak, by the profile's `dialect` (a shipped name or a .json path). */
  dialects: Record<string, Dialect>;
  /** http(s):// base of a dialect's provision call (PROVISION_URL); undefined: each device's target over http. */
  provisionUrl?: string;
  /** How wss:// links are verified (TLS_SERVER_NAME, TLS_INSECURE): the name the server's certificate holds, or none. */
  tls: { server_name: string; insecure: boolean };
}

/** The dialect a profile speaks (its own, or the default). */
export function dialectOf(profile: Profile, dialects: Record<string, Dialect>): Dialect {
  return dialects[profile.dialect ?? DEFAULT_DIALECT]!;
}

/** Why profile `p` cannot be spoken in dialect `d` (a message the dialect does not have), or null when it can. */
function profileMisfit(p: Profile, d: Dialect): string | null {
  if (p.keepalive.send === 'json-ping' && !d.send.ping) return 'sends JSON pings (keepalive.send "json-ping")';
  if (p.liveness.detect === 'pong-timeout' && !d.recv.pong) return 'waits for pongs (liveness.detect "pong-timeout")';
  if (p.keepalive.answer_server_pings && d.recv.ping && !d.send.pong)
    return 'answers server pings (keepalive.answer_server_pings)';
  if (p.end_of_speech === 'explicit' && !d.send.end_of_speech) return 'ends speech itself (end_of_speech "explicit")';
  if (d.audio.up.codec === 'pcm_s16le' && p.frame_bytes % 2 !== 0) return 'sends odd-sized PCM frames';
  if (p.barge_in_ms !== undefined && !d.send.abort) return 'interrupts replies (barge_in_ms)';
  if (p.after_reply === 'listen' && !d.send.listen)
    return 'goes back to listening after a reply (after_reply "listen")';
  return null;
}

/**
 * A profile that asks its dialect for a message the dialect does not have is refused before any load, naming the
 * shipped profiles the dialect can carry.
 */
export function checkProfileAgainstDialect(p: Profile, d: Dialect): void {
  const why = profileMisfit(p, d);
  if (!why) return;
  const fit = Object.values(PROFILES)
    .filter((q) => !profileMisfit(q, d))
    .map((q) => q.name);
  throw new DialectError(
    `profile ${p.name} ${why}, which dialect ${d.name} does not have${fit.length ? `: pick one it carries, e.g. --profile ${fit.join(', ')}` : ''}`,
  );
}

/**
 * The default connect ramp: 1 s per this many devices (up to 30 s). 500 connects in one second (the demo) took the
 * generator's lag within 0.2 ms of its INVALID bound on a shared 2-core box; 200 a second leaves it room.
 */
const RAMP_DEVICES_PER_S = 200;

/** The one set of bounds on fleet size: the CLI checks flags against these, k6 its -e variables. */
export const DEVICE_BOUNDS = { devices: { min: 1, max: 1_000_000 }, perVu: { min: 1, max: 100_000 } } as const;

/** Devices one VU runs when DEVICES_PER_VU is not given, on the k6 device (the VU's JavaScript runs each one). */
const DEFAULT_DEVICES_PER_VU = 50;

/**
 * The fleet's layout when DEVICES_PER_VU is not given. On the native engine a VU only hands its slice to the engine
 * and relays the records back, and each VU is a whole JavaScript runtime (about 2.5 MiB of k6's RSS): the fleet goes
 * in NATIVE_VUS VUs (spread over k6's threads), from 50 devices each (small fleets as on the k6 device) up to
 * NATIVE_MAX_DEVICES_PER_VU (a bigger fleet gets more VUs). 10,000 idle devices: 4 VUs instead of 200, k6's RSS
 * 632 → 261 MiB (issue 39). The devices are the same either way: their randomness is seeded by device id.
 */
export function defaultDevicesPerVu(devices: number, native: boolean): number {
  if (!native) return DEFAULT_DEVICES_PER_VU;
  return Math.min(NATIVE_MAX_DEVICES_PER_VU, Math.max(DEFAULT_DEVICES_PER_VU, Math.ceil(devices / NATIVE_VUS)));
}
const NATIVE_VUS = 4;
const NATIVE_MAX_DEVICES_PER_VU = 2500;

/**
 * Devices per VU when `segments` k6 processes share a fleet (`--instances`, or the k6-operator's runners). k6 splits a
 * scenario between execution segments by whole VUs, so each segment needs one of its own: the default layout for a
 * segment's share, but never more than the fleet divided evenly, rounded down (rounded up, 5 devices in VUs of 2 make
 * 3 VUs and leave one of 4 segments empty). Null when the fleet has fewer devices than segments.
 */
export function segmentDevicesPerVu(devices: number, segments: number, native: boolean): number | null {
  if (devices < segments) return null;
  return Math.min(defaultDevicesPerVu(Math.ceil(devices / segments), native), Math.floor(devices / segments));
}

/** k6 processes one run may split its fleet into (execution segments; `wakestorm run --instances`). */
export const INSTANCE_BOUNDS = { min: 1, max: 16 } as const;

/** A scenario's own profile objects by name, each validated like a JSON profile. */
export function ownProfiles(list: Profile[] = []): Record<string, Profile> {
  return Object.fromEntries(list.map((p, i) => [p.name, validateProfile(p, `scenario profile ${i}`)]));
}

class RunConfigError extends WakestormError {
  constructor(message: string) {
    super(message, 2);
  }

  override name = 'RunConfigError';
}

export { parseDuration } from './duration.ts';

/** An integer within bounds, or a one-line error naming it (`name` as the caller knows it: DEVICES or --devices). */
export function boundedInt(
  v: string | number,
  name: string,
  b: { min: number; max: number },
  Err: new (message: string) => Error = RunConfigError,
): number {
  const text = String(v).trim();
  if (!/^-?\d+$/.test(text)) throw new Err(`${name} must be an integer from ${b.min} to ${b.max}, got '${v}'`);
  const n = Number(text);
  if (n < b.min || n > b.max) throw new Err(`${name} must be between ${b.min} and ${b.max}, got ${n}`);
  return n;
}

function int(env: RunVars, name: 'DEVICES' | 'DEVICES_PER_VU', def: number, b: { min: number; max: number }): number {
  const v = env[name];
  return v === undefined || v === '' ? def : boundedInt(v, name, b);
}

/** WAKE: off | once[:min-max] | poisson:<mean> | fixed:<interval>, e.g. poisson:5m, once:2s-10s. */
export function parseWake(v: string | undefined, def: WakeSchedule): WakeSchedule {
  if (!v) return def;
  const [mode, arg] = v.split(':', 2) as [string, string | undefined];
  if (mode === 'off') return { ...def, mode: 'off' };
  if (mode === 'once') {
    if (!arg) return { ...def, mode: 'once' };
    const [a, b] = arg.split('-');
    const min = parseDuration(a!, 'WAKE once start');
    return {
      mode: 'once',
      interval_ms: 0,
      first_min_ms: min,
      first_max_ms: b ? parseDuration(b, 'WAKE once end') : min,
    };
  }
  if (mode === 'poisson' || mode === 'fixed') {
    if (!arg) throw new RunConfigError(`WAKE ${mode} needs an interval, e.g. ${mode}:5m`);
    const ms = parseDuration(arg, `WAKE ${mode} interval`);
    if (ms < 100) throw new RunConfigError('WAKE interval must be at least 100ms');
    return { mode, interval_ms: ms, first_min_ms: mode === 'fixed' ? ms : 0, first_max_ms: ms };
  }
  throw new RunConfigError(`WAKE must be off, once[:2s-10s], poisson:<mean> or fixed:<interval>, got '${v}'`);
}

/** The one loopback rule: localhost, ::1 or 127.0.0.0/8 (a bracketed IPv6 host is taken as written in a URL). */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

export function isLoopbackUrl(u: string): boolean {
  const m = /^[a-z]+:\/\/(\[[^\]]+\]|[^/:?#]+)/i.exec(u);
  return !!m && isLoopbackHost(m[1]!);
}

export function readRunConfig(
  env: RunVars,
  defaults: { devices: number; duration: string; profile: string; wake: WakeSchedule; ramp?: string },
  readFile: (path: string) => string,
  ownProfiles: Record<string, Profile> = {},
  /** Reads a file of the repository by its path from the root (the shipped dialects). */
  readShipped: (repoPath: string) => string = readFile,
): RunConfig {
  const devices = int(env, 'DEVICES', defaults.devices, DEVICE_BOUNDS.devices);
  const perVuDefault = defaultDevicesPerVu(devices, !!env.ENGINE_URL);
  const devicesPerVu = Math.min(devices, int(env, 'DEVICES_PER_VU', perVuDefault, DEVICE_BOUNDS.perVu));
  const durationMs = parseDuration(env.DURATION ?? defaults.duration, 'DURATION');
  if (durationMs < 1000) throw new RunConfigError('DURATION must be at least 1s');
  const rampMs = parseDuration(
    env.RAMP ?? defaults.ramp ?? `${Math.min(30, Math.max(1, Math.ceil(devices / RAMP_DEVICES_PER_S)))}s`,
    'RAMP',
  );
  if (rampMs >= durationMs)
    throw new RunConfigError(`RAMP (${rampMs} ms) must be shorter than DURATION (${durationMs} ms)`);
  const targetUrls = urlList(env.TARGET_URL ?? 'ws://127.0.0.1:18000', 'TARGET_URL');
  for (const targetUrl of targetUrls) {
    if (!/^wss?:\/\/[^/]+$/.test(targetUrl))
      throw new RunConfigError(
        `TARGET_URL must be a WebSocket base like ws://127.0.0.1:18000 (no path), or a comma-separated list of them, got '${targetUrl}'`,
      );
    if (!isLoopbackUrl(targetUrl) && env.ALLOW_REMOTE !== '1') {
      throw new RunConfigError(
        `TARGET_URL ${targetUrl} is not loopback: set ALLOW_REMOTE=1 if you really mean to load that host`,
      );
    }
  }
  const toxiproxyUrls = urlList(env.TOXIPROXY_URL ?? 'http://127.0.0.1:8474', 'TOXIPROXY_URL');
  for (const u of toxiproxyUrls)
    if (!/^https?:\/\/[^/]+$/.test(u))
      throw new RunConfigError(
        `TOXIPROXY_URL must be like http://127.0.0.1:8474, or a comma-separated list of them, got '${u}'`,
      );
  const profileSpec = env.PROFILE ?? defaults.profile;
  let profiles = parseProfileMix(profileSpec, readFile, ownProfiles);
  if (env.BACKOFF) profiles = overrideBackoff(profiles, env.BACKOFF);
  // DIALECT speaks every profile's behaviour in one dialect (a fleet aimed at a server with its own protocol).
  if (env.DIALECT) profiles = profiles.map((s) => ({ ...s, profile: { ...s.profile, dialect: env.DIALECT } }));
  const dialects: Record<string, Dialect> = {};
  for (const { profile } of profiles) {
    const spec = profile.dialect ?? DEFAULT_DIALECT;
    dialects[spec] ??= loadDialect(spec, readFile, readShipped);
    checkProfileAgainstDialect(profile, dialects[spec]);
  }
  const wake = parseWake(env.WAKE, defaults.wake);
  const engineUrl = env.ENGINE_URL || undefined;
  if (engineUrl && !(/^ws:\/\/[^/]+\/control$/.test(engineUrl) && isLoopbackUrl(engineUrl))) {
    throw new RunConfigError(
      `ENGINE_URL must be the engine's loopback control socket like ws://127.0.0.1:7000/control, got '${engineUrl}'`,
    );
  }
  const tls = { server_name: env.TLS_SERVER_NAME ?? '', insecure: env.TLS_INSECURE === '1' };
  if (tls.server_name && !/^[A-Za-z0-9.:-]{1,253}$/.test(tls.server_name))
    throw new RunConfigError(`TLS_SERVER_NAME must be a host name or address, got '${tls.server_name}'`);
  if (env.TLS_INSECURE !== undefined && env.TLS_INSECURE !== '1')
    throw new RunConfigError(`TLS_INSECURE must be 1 or unset, got '${String(env.TLS_INSECURE)}'`);
  // k6/websockets takes the TLS name from the URL, which names the proxy: only the engine can name the server.
  if (tls.server_name && !engineUrl)
    throw new RunConfigError(
      `the k6 device cannot name the TLS server ${tls.server_name} behind Toxiproxy (k6 takes the name from the proxy's URL): use the native engine, or --direct`,
    );
  const provisionUrl = env.PROVISION_URL || undefined;
  if (provisionUrl !== undefined) {
    if (!/^https?:\/\/[^/\s]+(\/\S*)?$/.test(provisionUrl))
      throw new RunConfigError(
        `PROVISION_URL must be an http(s) URL like http://127.0.0.1:8003/api/ota/ (or an origin: the dialect's path on it), got '${provisionUrl}'`,
      );
    if (!isLoopbackUrl(provisionUrl.replace(/^http/, 'ws')) && env.ALLOW_REMOTE !== '1')
      throw new RunConfigError(
        `PROVISION_URL ${provisionUrl} is not loopback: set ALLOW_REMOTE=1 if you really mean that host`,
      );
  }
  const idPrefix = env.ID_PREFIX ?? 'dev';
  if (!/^[A-Za-z0-9._-]{1,40}$/.test(idPrefix))
    throw new RunConfigError('ID_PREFIX must be 1-40 characters of [A-Za-z0-9._-]');
  return {
    devices,
    devicesPerVu,
    vus: Math.ceil(devices / devicesPerVu),
    durationMs,
    rampMs,
    targetUrl: targetUrls[0]!,
    targetUrls,
    toxiproxyUrl: toxiproxyUrls[0]!,
    toxiproxyUrls,
    token: readToken(env, readFile),
    seed: env.SEED ?? '1',
    profileSpec,
    profiles,
    wake,
    idPrefix,
    dialects,
    engineUrl,
    tls,
    provisionUrl,
  };
}

/** TOKEN, or the first line of TOKEN_FILE (how `wakestorm run --token` hands it over: no token on a command line). */
function readToken(env: RunVars, readFile: (path: string) => string): string | undefined {
  if (env.TOKEN) return env.TOKEN;
  if (!env.TOKEN_FILE) return undefined;
  let text: string;
  try {
    text = readFile(env.TOKEN_FILE);
  } catch {
    throw new RunConfigError(`TOKEN_FILE ${env.TOKEN_FILE}: cannot read it`);
  }
  const t = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .find((l) => l && !l.startsWith('#'));
  if (!t) throw new RunConfigError(`TOKEN_FILE ${env.TOKEN_FILE}: holds no token`);
  return t;
}

/**
 * "a, b,c/" → ['a', 'b', 'c']: a comma-separated list of URLs (Toxiproxy shards) without trailing slashes. An empty
 * entry is an error, thrown as `Err` (the CLI's own flag errors pass their class).
 */
export function urlList(v: string, name: string, Err: new (message: string) => Error = RunConfigError): string[] {
  const items = v.split(',').map((x) => x.trim().replace(/\/+$/, ''));
  if (items.some((x) => !x)) throw new Err(`${name} has an empty entry: '${v}'`);
  return items;
}

/** BACKOFF=<policy>[:base_ms[:cap_ms]] replaces every profile's reconnect policy (to compare policies on one fleet). */
export function overrideBackoff(shares: ProfileShare[], spec: string, name = 'BACKOFF'): ProfileShare[] {
  const [policy, base, cap] = spec.split(':');
  if (!BACKOFF_POLICIES.includes(policy as BackoffPolicyName))
    throw new RunConfigError(`${name} must be one of ${BACKOFF_POLICIES.join(', ')}[:base_ms[:cap_ms]], got '${spec}'`);
  const num = (v: string | undefined, what: string) => {
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v) || Number(v) < 1)
      throw new RunConfigError(`${name} ${what} must be a positive integer (ms), got '${v}'`);
    return Number(v);
  };
  const b = num(base, 'base');
  const c = num(cap, 'cap');
  return shares.map((s) => {
    const r = {
      ...s.profile.reconnect,
      policy: policy as BackoffPolicyName,
      first_ms: undefined,
      jitter_ms: undefined,
    };
    if (b !== undefined) r.base_ms = b;
    if (c !== undefined) r.cap_ms = c;
    if (r.cap_ms < r.base_ms) r.cap_ms = r.base_ms;
    return { ...s, profile: { ...s.profile, name: `${s.profile.name}+${policy}`, reconnect: r } };
  });
}
