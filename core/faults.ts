// The named fault library, in two tables: TOXICS (Toxiproxy toxics on a proxy's data) and LINK_ACTIONS (the proxy
// switched off, the server restarted). Each entry turns params into actions; core/toxiproxy-api.ts turns actions
// into requests, which the k6 chaos VU and the `wakestorm toxic` CLI both carry out.

import { WakestormError } from './errors.ts';
export type Stream = 'upstream' | 'downstream';

/** What applying a fault means, for whoever holds the Toxiproxy API (or the stack's control API). */
export type FaultAction =
  | { kind: 'toxic'; type: string; stream: Stream; toxicity: number; attributes: Record<string, number> }
  | { kind: 'disable-proxy' }
  | { kind: 'server-restart' };

interface ParamSpec {
  default: number;
  min: number;
  max: number;
  unit: string;
}

export interface FaultDef {
  description: string;
  /** 'toxic': added to the proxy's data path (TOXICS); 'link': acts on the whole link (LINK_ACTIONS). */
  kind: 'toxic' | 'link';
  /** True when applying it needs the stack's control API (the stack owns the server). */
  needsControl: boolean;
  /** Directions a fault applies to unless the entry says otherwise. */
  streams: Stream[];
  params: Record<string, ParamSpec>;
  /** True when the fault ends the link at its onset (used for disconnect_detect_time). */
  killsLink: boolean;
  actions(params: Record<string, number>, streams: Stream[], toxicity: number): FaultAction[];
}

const toxic =
  (type: string, attrs: (p: Record<string, number>) => Record<string, number>) =>
  (p: Record<string, number>, streams: Stream[], toxicity: number): FaultAction[] =>
    streams.map((stream) => ({ kind: 'toxic', type, stream, toxicity, attributes: attrs(p) }));

type Def = Omit<FaultDef, 'kind' | 'needsControl'>;

/** Toxiproxy toxics: each becomes one toxic per direction on the proxy. */
export const TOXICS: Record<string, Def> = {
  latency: {
    description: 'adds latency ± jitter (ms) to every chunk, per direction',
    streams: ['downstream'],
    params: {
      latency: { default: 100, min: 0, max: 60_000, unit: 'ms' },
      jitter: { default: 0, min: 0, max: 60_000, unit: 'ms' },
    },
    killsLink: false,
    actions: toxic('latency', (p) => ({ latency: p.latency!, jitter: p.jitter! })),
  },
  bandwidth: {
    description: 'limits throughput to rate KB/s (the audio uplink needs 32 KB/s)',
    streams: ['upstream'],
    params: { rate: { default: 40, min: 1, max: 10_000_000, unit: 'KB/s' } },
    killsLink: false,
    actions: toxic('bandwidth', (p) => ({ rate: p.rate! })),
  },
  blackhole: {
    description: 'drops all data both ways and never closes: the half-open link devices must notice themselves',
    streams: ['upstream', 'downstream'],
    params: {},
    killsLink: true,
    actions: toxic('timeout', () => ({ timeout: 0 })),
  },
  'idle-cut': {
    description: 'drops data and closes the connection after timeout ms without data (each chunk restarts the timer)',
    streams: ['upstream'],
    params: { timeout: { default: 5000, min: 1, max: 3_600_000, unit: 'ms' } },
    killsLink: true,
    actions: toxic('timeout', (p) => ({ timeout: p.timeout! })),
  },
  reset: {
    // Toxiproxy's reset_peer acts when the next chunk passes (then waits timeout ms and closes with linger 0):
    // a link with no traffic during the entry is not reset. Both directions by default, so either side's data triggers it.
    description:
      'resets each connection with a TCP RST at its next chunk of data (after timeout ms); quiet links are untouched',
    streams: ['upstream', 'downstream'],
    params: { timeout: { default: 0, min: 0, max: 3_600_000, unit: 'ms' } },
    killsLink: true,
    actions: toxic('reset_peer', (p) => ({ timeout: p.timeout! })),
  },
  'slow-close': {
    description: 'delays the TCP close by delay ms',
    streams: ['downstream'],
    params: { delay: { default: 5000, min: 0, max: 3_600_000, unit: 'ms' } },
    killsLink: false,
    actions: toxic('slow_close', (p) => ({ delay: p.delay! })),
  },
  slicer: {
    description: 'slices data into small packets (average_size ± size_variation bytes) with delay µs between them',
    streams: ['downstream'],
    params: {
      average_size: { default: 64, min: 1, max: 65_536, unit: 'bytes' },
      size_variation: { default: 32, min: 0, max: 65_536, unit: 'bytes' },
      delay: { default: 100, min: 0, max: 10_000_000, unit: 'µs' },
    },
    killsLink: false,
    actions: toxic('slicer', (p) => ({
      average_size: p.average_size!,
      size_variation: p.size_variation!,
      delay: p.delay!,
    })),
  },
  'limit-data': {
    description: 'closes each connection after bytes bytes',
    streams: ['downstream'],
    params: { bytes: { default: 100_000, min: 1, max: 1e12, unit: 'bytes' } },
    killsLink: false,
    actions: toxic('limit_data', (p) => ({ bytes: p.bytes! })),
  },
};

/** Link actions: not toxics on the data, but the proxy switched off or the server restarted. */
export const LINK_ACTIONS: Record<string, Def & { needsControl: boolean }> = {
  cut: {
    description: 'the network is down: the proxy is disabled, open links close, new ones are refused',
    streams: [],
    params: {},
    killsLink: true,
    needsControl: false,
    actions: () => [{ kind: 'disable-proxy' }],
  },
  'server-restart': {
    description:
      'the reference server drains with 1012 and is down for the entry\'s "for", then starts again (needs the stack\'s control URL)',
    streams: [],
    params: {},
    killsLink: true,
    needsControl: true,
    actions: () => [{ kind: 'server-restart' }],
  },
};

/** Every fault by name: the toxics and the link actions, one namespace (a timeline entry names either). */
export const FAULTS: Record<string, FaultDef> = {
  ...Object.fromEntries(
    Object.entries(TOXICS).map(([k, d]) => [k, { ...d, kind: 'toxic' as const, needsControl: false }]),
  ),
  ...Object.fromEntries(Object.entries(LINK_ACTIONS).map(([k, d]) => [k, { ...d, kind: 'link' as const }])),
};

export class FaultError extends WakestormError {
  constructor(message: string) {
    super(message, 2);
  }

  override name = 'FaultError';
}

/** Resolves a fault's params against its spec (defaults filled, bounds checked), naming what is wrong. */
export function resolveParams(
  fault: string,
  given: Record<string, unknown> | undefined,
  where: string,
): Record<string, number> {
  const def = FAULTS[fault];
  if (!def) throw new FaultError(`${where}: unknown fault "${fault}"; known: ${Object.keys(FAULTS).join(', ')}`);
  const out: Record<string, number> = {};
  const own = (o: object, k: string) => Object.prototype.hasOwnProperty.call(o, k);
  for (const k of Object.keys(given ?? {})) {
    // Own keys only: "constructor" or "__proto__" is no param, whatever the prototype chain holds.
    if (!own(def.params, k))
      throw new FaultError(
        `${where}: fault "${fault}" has no param "${k}"${Object.keys(def.params).length ? ` (it takes ${Object.keys(def.params).join(', ')})` : ' (it takes none)'}`,
      );
  }
  for (const [k, spec] of Object.entries(def.params)) {
    const v = (given && own(given, k) ? given[k] : undefined) ?? spec.default;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < spec.min || v > spec.max) {
      throw new FaultError(
        `${where}: param "${k}" of "${fault}" must be a number in ${spec.min}-${spec.max} ${spec.unit}, got ${JSON.stringify(v)}`,
      );
    }
    out[k] = v;
  }
  return out;
}

/** The directions an entry applies to: its own stream ('both' for both), else the fault's default. */
export function resolveStreams(fault: string, stream: unknown, where: string): Stream[] {
  const def = FAULTS[fault]!;
  if (stream === undefined) return def.streams;
  if (def.streams.length === 0) throw new FaultError(`${where}: fault "${fault}" has no direction; drop "stream"`);
  if (stream === 'both') return ['upstream', 'downstream'];
  if (stream === 'upstream' || stream === 'downstream') return [stream];
  throw new FaultError(`${where}: "stream" must be upstream, downstream or both, got ${JSON.stringify(stream)}`);
}
