// The tester watches all of itself during a run (issues 40, 41): every process the numbers pass through answers a
// heartbeat (k6's REST API, the device engine's /health, each Toxiproxy's API), and the generator's own lag and late
// uplink frames are read live against the verdict's bounds (core/verdict.ts generatorSaturation). A process that
// stops answering for STALL_MS makes the run INVALID at once, naming it; a generator past the bounds is said on the
// progress line and in k6.log when it happens and, with --abort-on-invalid, stops the run after a grace period. Once
// the devices saw the server break the protocol, neither stops the run: a tester overwhelmed by a hostile server is
// the server's failure, and the verdict FAILs it.
import { generatorLagName, generatorSaturation, SATURATION } from '../core/verdict.ts';
import { httpCall, httpJson } from './local-http.ts';

/** A process that answers no heartbeat for this long has stalled: whatever the devices measured meanwhile is the tester's. */
const STALL_MS = 5000;
/** How often each process is asked. */
const PROBE_MS = 1000;
/** A saturated generator is said to be back under its bounds once it stayed under this long. */
const SETTLE_MS = 5000;
/** A generator past the saturation bounds this long is stopped (with --abort-on-invalid). */
export const ABORT_GRACE_MS = 15_000;

interface Heartbeat {
  /** What the verdict names: "k6", "the device engine (pid 12)", "Toxiproxy (pid 34)". */
  name: string;
  /** An HTTP URL that answers while the process runs. */
  url: string;
}

export interface TesterWatchOptions {
  beats: Heartbeat[];
  /** k6's REST APIs (one per instance): the live lag and late frames are summed over them. */
  k6Apis: string[];
  /** The engine that runs the devices ('native' or 'k6'): names the lag (core/verdict.ts generatorLagName). */
  engine?: string;
  /** A process stalled: the run is INVALID for `why`. Called once. */
  onStall(why: string): void;
  /** The generator crossed the saturation bounds (reasons), or came back under them (empty). */
  onSaturation(reasons: string[], sinceMs: number): void;
  /** Stop the run when the generator stays saturated for ABORT_GRACE_MS. */
  abort: boolean;
  onAbort(reasons: string[]): void;
  /** How long the generator may stay saturated before the abort (default ABORT_GRACE_MS). */
  graceMs?: number;
  /** How long a process may stay silent (default STALL_MS), and a saturated generator under its bounds before it is
   * said to be back (default SETTLE_MS): a test shortens them. */
  stallMs?: number;
  settleMs?: number;
}

export interface TesterWatch {
  /** What the progress line adds: a stalled process, stale numbers, a saturated generator; '' when all is well. */
  note(): string;
  stop(): void;
}

async function answers(url: string): Promise<boolean> {
  try {
    await httpCall(url, { signal: AbortSignal.timeout(PROBE_MS * 2) });
    return true;
  } catch {
    return false;
  }
}

/** A metric's live values from k6's REST API (a trend's stats, a counter's count). */
type TrendSample = Record<string, number | undefined>;

async function sample(api: string, id: string): Promise<TrendSample | null> {
  try {
    const r = await httpJson<{ data: { attributes: { sample: TrendSample } } }>(`${api}/v1/metrics/${id}`, {
      signal: AbortSignal.timeout(PROBE_MS * 2),
    });
    return r.ok ? r.json.data.attributes.sample : null;
  } catch {
    return null;
  }
}

interface LiveHealth {
  /** The verdict's reasons on the run so far (said when they appear and when they go). */
  reasons: string[];
  /** The worst instance's median lag, ms. */
  lagMed: number;
  slips: number;
  frames: number;
  /** Protocol violations the devices saw so far. */
  violations: number;
}

/** The generator's health summed over the instances: the worst instance's lag, every instance's counts. */
async function liveHealth(apis: string[], engine: string | undefined): Promise<LiveHealth> {
  const all = await Promise.all(
    apis.map(async (api) =>
      Promise.all(['vu_loop_lag', 'audio_slips', 'audio_frames', 'protocol_violations'].map((m) => sample(api, m))),
    ),
  );
  let lag: TrendSample | undefined;
  let lagMed = 0;
  let slips = 0;
  let frames = 0;
  let violations = 0;
  for (const [l, s, f, v] of all) {
    violations += v?.count ?? 0;
    // k6's API gives a trend's avg, min, med, max, p(90), p(95): no count, no p(99) (the verdict reads those).
    if (l && l.max !== undefined && (!lag || (l['p(95)'] ?? 0) > (lag['p(95)'] ?? 0))) lag = l;
    lagMed = Math.max(lagMed, l?.med ?? 0);
    slips += s?.count ?? 0;
    frames += f?.count ?? 0;
  }
  const reasons = generatorSaturation({ engine, lag: lag && { ...lag, count: 1 }, slips, frames });
  return { reasons, lagMed, slips, frames, violations };
}

/**
 * What makes the run unable to end valid, from one probe to the next: the median lag past the p95 bound (half the
 * samples already are, so the p95 stays past it), or this window's late frames past the share. A ramp's burst that
 * the rest of the run dilutes is neither.
 */
function hopeless(now: LiveHealth, before: LiveHealth | null, engine: string | undefined): string[] {
  const out: string[] = [];
  if (now.lagMed > SATURATION.vuLoopLagP95Ms)
    out.push(
      `generator saturated: ${generatorLagName(engine)} median ${now.lagMed.toFixed(0)} ms > ${SATURATION.vuLoopLagP95Ms} ms`,
    );
  const slips = now.slips - (before?.slips ?? 0);
  const frames = now.frames - (before?.frames ?? 0);
  if (slips >= SATURATION.minAudioSlips && slips > SATURATION.audioSlipShare * Math.max(frames, 1))
    out.push(`generator saturated: ${slips} of ${frames} uplink audio frames sent late since the last probe`);
  return out;
}

/**
 * Starts watching. A process is judged only after it first answered (starting up is not stalling), and a late tick of
 * the CLI's own timer (the CLI itself stalled) blames nobody.
 */
export function watchTester(o: TesterWatchOptions): TesterWatch {
  const t0 = Date.now();
  const lastOk = new Map<string, number>();
  let stalled: string | null = null;
  let stalledName = '';
  let saturated: { reasons: string[]; since: number } | null = null;
  let aborted = false;
  let underSince: number | null = null;
  let last: LiveHealth | null = null;
  /** Since when every probe found the run unable to end valid (hopeless). */
  let hotSince: number | null = null;
  let lastTick = Date.now();
  let busy = false;
  // Protocol violations seen so far: a tester overwhelmed by a server that floods or sends huge frames is the
  // server's failure (the verdict FAILs it), not a reason to stop the run as the tester's.
  let violations = 0;
  const tick = async () => {
    const now = Date.now();
    // The CLI's own timer fired late: whoever did not answer may simply not have been asked.
    if (now - lastTick > PROBE_MS * 3) for (const k of lastOk.keys()) lastOk.set(k, now);
    lastTick = now;
    if (busy || stalled) return;
    busy = true;
    try {
      const ok = await Promise.all(o.beats.map((b) => answers(b.url)));
      const at = Date.now();
      o.beats.forEach((b, i) => {
        if (ok[i]) lastOk.set(b.name, at);
        else if (!stalled && !violations && lastOk.has(b.name) && at - lastOk.get(b.name)! >= (o.stallMs ?? STALL_MS)) {
          stalledName = b.name;
          stalled = `${b.name} stopped answering for ${Math.round((at - lastOk.get(b.name)!) / 1000)} s (frozen or starved): the tester stalled, its numbers are its own`;
          o.onStall(stalled);
        }
      });
      if (stalled) return;
      const health = await liveHealth(o.k6Apis, o.engine);
      const reasons = health.reasons;
      violations = Math.max(violations, health.violations);
      if (reasons.length && !saturated) {
        saturated = { reasons, since: Date.now() };
        o.onSaturation(reasons, Date.now() - t0);
      } else if (!reasons.length && saturated) {
        // Back under only once it stayed under for a while: a run at the bound would otherwise flap every probe.
        underSince ??= Date.now();
        if (Date.now() - underSince >= (o.settleMs ?? SETTLE_MS)) {
          saturated = null;
          underSince = null;
          o.onSaturation([], Date.now() - t0);
        }
      } else if (saturated) {
        saturated.reasons = reasons;
        underSince = null;
      }
      const stuck = hopeless(health, last, o.engine);
      last = health;
      hotSince = stuck.length ? (hotSince ?? Date.now()) : null;
      if (
        hotSince !== null &&
        o.abort &&
        !aborted &&
        !violations &&
        Date.now() - hotSince >= (o.graceMs ?? ABORT_GRACE_MS)
      ) {
        aborted = true;
        o.onAbort(stuck);
      }
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(() => void tick().catch(() => {}), PROBE_MS);
  return {
    note() {
      if (stalled) return `TESTER STALLED: ${stalledName} not answering`;
      const k6 = o.beats.find((b) => b.name === 'k6');
      const k6Ok = k6 && lastOk.get(k6.name);
      const stale = k6Ok !== undefined ? Date.now() - k6Ok : 0;
      const parts: string[] = [];
      if (stale > PROBE_MS * 3) parts.push(`numbers stale: k6 silent ${Math.round(stale / 1000)} s`);
      if (saturated) parts.push(`TESTER SATURATED: ${saturated.reasons[0]}`);
      return parts.join('  ');
    },
    stop() {
      clearInterval(timer);
    },
  };
}

/** How often the CLI reads k6's RSS against k6DeviceRssBoundMiB, ms. */
export const K6_GUARD_MS = 250;
/** Past this many times its bound, after the overrun, k6 is killed (its summary lost: the run INVALID). */
export const K6_KILL_FACTOR = 2;
/** How long after the proxies are cut k6 may read on what was already in flight before the kill rule applies, ms. */
export const K6_CUT_SETTLE_MS = 5_000;

/**
 * Whether k6, stopped past its bound at `overrunAt`, is to be killed now, at RSS `rss` (MiB). With no network to cut
 * (`--direct`) nothing stops its reads: killed past K6_KILL_FACTOR times the bound. When the proxies were cut nothing
 * more arrives, but what was in flight still is read (kernel buffers, frames half read: twenty 50 MB frames took k6
 * from its bound of 270 MiB to 547): it is given K6_CUT_SETTLE_MS, then killed past the factor only if it grew by
 * another bound's worth since, which only a feed the cut did not stop explains.
 */
export function k6KillRule(bound: number, cut: boolean, overrunAt: number): (rss: number, now: number) => boolean {
  let settled: number | null = cut ? null : 0;
  return (rss, now) => {
    if (settled === null) {
      if (now - overrunAt < K6_CUT_SETTLE_MS) return false;
      settled = rss;
    }
    return rss > K6_KILL_FACTOR * bound && rss > settled + bound;
  };
}

/**
 * What the k6 device (--engine k6) may hold, MiB: k6 reads every message whole before a device can refuse it, so a
 * server's huge frames or flood grow k6 by what it sends. Measured at defaults k6 holds ~2.2 MiB per VU and up to
 * ~180 KiB per device (BENCHMARKS.md); the bound gives each twice that over a 256 MiB base. Past it the CLI stops
 * the run (docs/engine.md): read every K6_GUARD_MS; past K6_KILL_FACTOR times the bound k6 is killed (k6KillRule).
 */
export function k6DeviceRssBoundMiB(devices: number, vus: number): number {
  return Math.round(256 + 4 * vus + 0.5 * devices);
}
