// Chaos timelines as data: named ones ship here, others come from JSON; each is validated before any load.
import { unknownField, WakestormError } from './errors.ts';
import type { FaultWindow } from './phases.ts';
import { parseDuration } from './run-config.ts';
import { FAULTS, FaultError, resolveParams, resolveStreams, type FaultAction, type Stream } from './faults.ts';

/** One entry as written: times as "10s"/"500ms"/"2m" or milliseconds. */
export interface TimelineEntry {
  at: string | number;
  for: string | number;
  fault: string;
  stream?: Stream | 'both';
  toxicity?: number;
  params?: Record<string, number>;
  /** Toxiproxy proxy name; 'voice' unless given. */
  proxy?: string;
}

/** A validated entry: absolute offsets in ms from the chaos epoch, and the actions to apply. */
export interface ChaosStep {
  index: number;
  atMs: number;
  forMs: number;
  fault: string;
  proxy: string;
  streams: Stream[];
  toxicity: number;
  params: Record<string, number>;
  actions: FaultAction[];
  killsLink: boolean;
  /** Applying it needs the stack's control API (core/faults.ts LINK_ACTIONS). */
  needsControl: boolean;
}

export const TIMELINES: Record<string, TimelineEntry[]> = {
  // Home Wi-Fi on a bad day: jitter all along, two short drops.
  'flaky-wifi': [
    { at: '3s', for: '40s', fault: 'latency', stream: 'downstream', params: { latency: 40, jitter: 30 } },
    { at: '3s', for: '40s', fault: 'latency', stream: 'upstream', params: { latency: 20, jitter: 15 } },
    { at: '12s', for: '2s', fault: 'cut' },
    { at: '30s', for: '3s', fault: 'cut' },
  ],
  // The link goes silent both ways and stays open: only the device's own liveness check notices.
  'half-open': [{ at: '5s', for: '70s', fault: 'blackhole' }],
  // The server drains with 1012 and is gone for 5 s: every device reconnects at once.
  'server-restart': [{ at: '10s', for: '5s', fault: 'server-restart' }],
  // Uplink throttled to just above the audio bitrate (32 KB/s) while everyone talks.
  'congested-uplink': [{ at: '3s', for: '50s', fault: 'bandwidth', stream: 'upstream', params: { rate: 36 } }],
  // Moving between cells: latency spikes, then the old path resets.
  'cell-handover': [
    { at: '5s', for: '3s', fault: 'latency', stream: 'both', params: { latency: 300, jitter: 100 } },
    { at: '15s', for: '3s', fault: 'latency', stream: 'both', params: { latency: 500, jitter: 200 } },
    { at: '19s', for: '1s', fault: 'reset' },
  ],
  // A short full cut: the reconnect-storm default.
  'storm-cut': [{ at: '10s', for: '3s', fault: 'cut' }],
};

class TimelineError extends WakestormError {
  constructor(message: string) {
    super(message, 2);
  }

  override name = 'TimelineError';
}

/**
 * A timeline time: a JSON number is milliseconds; a string is a duration in the run's one grammar (parseDuration:
 * "10s", "500ms", "1m30s", a bare "60" is seconds, as with --duration).
 */
export function toMs(v: unknown, where: string, field: string): number {
  if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return Math.round(v);
  if (typeof v === 'string') {
    try {
      return parseDuration(v, field);
    } catch {
      /* named below, with the entry */
    }
  }
  throw new TimelineError(
    `${where}: "${field}" must be a duration like 10s, 500ms or 2m (or a number of ms), got ${JSON.stringify(v)}`,
  );
}

/** Validates a timeline; the error names the entry (by index and fault) and the field. */
const ENTRY_FIELDS = ['at', 'for', 'fault', 'stream', 'toxicity', 'params', 'proxy'];

/** Checks every entry of a timeline and names every problem at once (one per entry at most, each with its entry). */
export function validateTimeline(entries: unknown, name: string, durationMs?: number): ChaosStep[] {
  if (!Array.isArray(entries)) throw new TimelineError(`timeline ${name}: must be a list of {at, for, fault} entries`);
  const problems: string[] = [];
  const steps = entries.map((raw, index) => {
    try {
      return validateEntry(raw, index, name, durationMs);
    } catch (e) {
      if (!(e instanceof TimelineError)) throw e;
      problems.push(e.message);
      return null;
    }
  });
  if (!problems.length) problems.push(...overlaps(steps as ChaosStep[], name));
  if (problems.length === 1) throw new TimelineError(problems[0]!);
  if (problems.length) throw new TimelineError(`timeline ${name}: ${problems.length} problems: ${problems.join('; ')}`);
  return steps as ChaosStep[];
}

/**
 * Link faults that overlap: a cut's end enables its proxy again and a server restart's end starts the server, so an
 * inner entry's end would lift an outer one still meant to hold (a cut at 3-13 s with another at 6-9 s had devices
 * back at 9 s while the run called 3-13 s a fault). Refused, naming both and the one entry that says it. Toxics
 * overlap freely: each entry adds and removes a toxic of its own.
 */
function overlaps(steps: ChaosStep[], name: string): string[] {
  const target = (s: ChaosStep): string | null => {
    const a = s.actions.find((x) => x.kind !== 'toxic');
    if (!a) return null;
    return a.kind === 'server-restart' ? 'the server' : `proxy ${s.proxy}`;
  };
  const secs = (ms: number) => `${ms / 1000}s`;
  const out: string[] = [];
  const link = steps.filter((s) => target(s) !== null).sort((a, b) => a.atMs - b.atMs);
  for (let i = 0; i < link.length; i++) {
    for (let j = i + 1; j < link.length; j++) {
      const [a, b] = [link[i]!, link[j]!];
      if (b.atMs >= a.atMs + a.forMs) break;
      if (target(a) !== target(b)) continue;
      const from = Math.min(a.atMs, b.atMs);
      const to = Math.max(a.atMs + a.forMs, b.atMs + b.forMs);
      out.push(
        `timeline ${name} entries ${a.index} (${a.fault} ${secs(a.atMs)}-${secs(a.atMs + a.forMs)}) and ${b.index} (${b.fault} ${secs(b.atMs)}-${secs(b.atMs + b.forMs)}) overlap on ${target(a)}: the first to end would lift the other; write one entry (at ${secs(from)}, for ${secs(to - from)})`,
      );
    }
  }
  return out;
}

function validateEntry(raw: unknown, index: number, name: string, durationMs?: number): ChaosStep {
  {
    const where = `timeline ${name} entry ${index}${raw && typeof raw === 'object' && typeof (raw as TimelineEntry).fault === 'string' ? ` (${(raw as TimelineEntry).fault})` : ''}`;
    if (!raw || typeof raw !== 'object' || Array.isArray(raw))
      throw new TimelineError(`${where}: must be an object {at, for, fault}`);
    const e = raw as Record<string, unknown>;
    for (const k of Object.keys(e)) {
      if (!ENTRY_FIELDS.includes(k)) throw new TimelineError(`${where}: field "${k}" ${unknownField(k, ENTRY_FIELDS)}`);
    }
    if (typeof e.fault !== 'string' || !(e.fault in FAULTS))
      throw new TimelineError(
        `${where}: "fault" must be one of ${Object.keys(FAULTS).join(', ')}, got ${JSON.stringify(e.fault)}`,
      );
    const atMs = toMs(e.at, where, 'at');
    const forMs = toMs(e.for, where, 'for');
    if (forMs <= 0) throw new TimelineError(`${where}: "for" must be longer than 0`);
    if (durationMs !== undefined && atMs + forMs > durationMs) {
      throw new TimelineError(
        `${where}: ends at ${(atMs + forMs) / 1000}s, after the run's DURATION of ${durationMs / 1000}s`,
      );
    }
    const toxicity = e.toxicity === undefined ? 1 : e.toxicity;
    if (typeof toxicity !== 'number' || toxicity < 0 || toxicity > 1)
      throw new TimelineError(`${where}: "toxicity" must be a number in 0-1`);
    if (e.proxy !== undefined && (typeof e.proxy !== 'string' || !/^[a-z][a-z0-9_-]*$/.test(e.proxy)))
      throw new TimelineError(`${where}: "proxy" must be a proxy name`);
    if (e.params !== undefined && (typeof e.params !== 'object' || e.params === null || Array.isArray(e.params)))
      throw new TimelineError(`${where}: "params" must be an object`);
    try {
      const params = resolveParams(e.fault, e.params as Record<string, unknown> | undefined, where);
      const streams = resolveStreams(e.fault, e.stream, where);
      const def = FAULTS[e.fault]!;
      return {
        index,
        atMs,
        forMs,
        fault: e.fault,
        proxy: (e.proxy as string) ?? 'voice',
        streams,
        toxicity,
        params,
        actions: def.actions(params, streams, toxicity),
        killsLink: def.killsLink,
        needsControl: def.needsControl,
      };
    } catch (err) {
      if (err instanceof FaultError) throw new TimelineError(err.message);
      throw err;
    }
  }
}

/**
 * TIMELINE: empty/'none', a shipped name, or a path to a JSON file (a list of entries).
 * `readFile` is k6's open() in the init context, or readFileSync on Node.
 */
export function loadTimeline(
  spec: string | undefined,
  readFile: (path: string) => string,
  durationMs?: number,
): { name: string; steps: ChaosStep[] } {
  if (!spec || spec === 'none') return { name: 'none', steps: [] };
  if (spec.endsWith('.json')) {
    let json: unknown;
    let text: string;
    try {
      text = readFile(spec);
    } catch (e) {
      throw new TimelineError(`TIMELINE ${spec}: cannot read it (${String((e as Error).message ?? e).split('\n')[0]})`);
    }
    try {
      json = JSON.parse(text);
    } catch {
      throw new TimelineError(`TIMELINE ${spec}: not valid JSON`);
    }
    return { name: spec, steps: validateTimeline(json, spec, durationMs) };
  }
  const t = TIMELINES[spec];
  if (!t)
    throw new TimelineError(
      `unknown TIMELINE "${spec}": shipped are ${Object.keys(TIMELINES).join(', ')}, or give a .json path`,
    );
  return { name: spec, steps: validateTimeline(t, spec, durationMs) };
}

/** The latest onset of a link-killing fault at or before `now`, as an absolute time; null if none yet. */
export function lastLinkDeath(steps: ChaosStep[], epochMs: number, now: number): number | null {
  let best: number | null = null;
  for (const s of steps) {
    const t = epochMs + s.atMs;
    if (s.killsLink && t <= now && (best === null || t > best)) best = t;
  }
  return best;
}

/** Each step's label for its recovery, "<n>:<fault>" (n from 1, in timeline order): bounded by the timeline. */
export function faultLabels(steps: { fault: string }[]): string[] {
  return steps.map((s, i) => `${i + 1}:${s.fault}`);
}

/** Each step's window as absolute times, with its label: what happens inside one is the timeline's doing. */
export function faultWindows(steps: ChaosStep[], epochMs: number): FaultWindow[] {
  const labels = faultLabels(steps);
  return steps.map((s, i) => ({ label: labels[i]!, start: epochMs + s.atMs, end: epochMs + s.atMs + s.forMs }));
}
