// The tester watches all of itself during a run (issues 40, 41): every process the numbers pass through answers a
// heartbeat (k6's REST API, the device engine's /health, each Toxiproxy's API), and the generator's own lag and late
// uplink frames are read live against the verdict's bounds (core/verdict.ts generatorSaturation). A process that
// stops answering for STALL_MS makes the run INVALID at once, naming it; a generator past the bounds is said on the
// progress line and in k6.log when it happens and, with --abort-on-invalid, stops the run after a grace period.
import { generatorSaturation } from '../core/verdict.ts';

/** A process that answers no heartbeat for this long has stalled: whatever the devices measured meanwhile is the tester's. */
const STALL_MS = 5000;
/** How often each process is asked. */
const PROBE_MS = 1000;
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
  /** A process stalled: the run is INVALID for `why`. Called once. */
  onStall(why: string): void;
  /** The generator crossed the saturation bounds (reasons), or came back under them (empty). */
  onSaturation(reasons: string[], sinceMs: number): void;
  /** Stop the run when the generator stays saturated for ABORT_GRACE_MS. */
  abort: boolean;
  onAbort(reasons: string[]): void;
  /** How long the generator may stay saturated before the abort (default ABORT_GRACE_MS). */
  graceMs?: number;
}

export interface TesterWatch {
  /** What the progress line adds: a stalled process, stale numbers, a saturated generator; '' when all is well. */
  note(): string;
  stop(): void;
}

async function answers(url: string): Promise<boolean> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(PROBE_MS * 2) });
    await r.arrayBuffer();
    return true;
  } catch {
    return false;
  }
}

/** A metric's live values from k6's REST API (a trend's stats, a counter's count). */
type TrendSample = Record<string, number | undefined>;

async function sample(api: string, id: string): Promise<TrendSample | null> {
  try {
    const r = await fetch(`${api}/v1/metrics/${id}`, { signal: AbortSignal.timeout(PROBE_MS * 2) });
    if (!r.ok) return null;
    return ((await r.json()) as { data: { attributes: { sample: TrendSample } } }).data.attributes.sample;
  } catch {
    return null;
  }
}

/** The generator's health summed over the instances: the worst instance's lag, every instance's frames. */
async function liveHealth(apis: string[]): Promise<string[]> {
  const all = await Promise.all(
    apis.map(async (api) => Promise.all(['vu_loop_lag', 'audio_slips', 'audio_frames'].map((m) => sample(api, m)))),
  );
  let lag: TrendSample | undefined;
  let slips = 0;
  let frames = 0;
  for (const [l, s, f] of all) {
    // k6's API gives a trend's avg, min, med, max, p(90), p(95): no count, no p(99) (the verdict reads those).
    if (l && l.max !== undefined && (!lag || (l['p(95)'] ?? 0) > (lag['p(95)'] ?? 0))) lag = l;
    slips += s?.count ?? 0;
    frames += f?.count ?? 0;
  }
  return generatorSaturation({ lag: lag && { ...lag, count: 1 }, slips, frames });
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
  let lastTick = Date.now();
  let busy = false;
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
        else if (!stalled && lastOk.has(b.name) && at - lastOk.get(b.name)! >= STALL_MS) {
          stalledName = b.name;
          stalled = `${b.name} stopped answering for ${Math.round((at - lastOk.get(b.name)!) / 1000)} s (frozen or starved): the tester stalled, its numbers are its own`;
          o.onStall(stalled);
        }
      });
      if (stalled) return;
      const reasons = await liveHealth(o.k6Apis);
      if (reasons.length && !saturated) {
        saturated = { reasons, since: Date.now() };
        o.onSaturation(reasons, Date.now() - t0);
      } else if (!reasons.length && saturated) {
        saturated = null;
        o.onSaturation([], Date.now() - t0);
      } else if (saturated) saturated.reasons = reasons;
      if (saturated && o.abort && !aborted && Date.now() - saturated.since >= (o.graceMs ?? ABORT_GRACE_MS)) {
        aborted = true;
        o.onAbort(saturated.reasons);
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
