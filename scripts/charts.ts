// Charts of a run (latency percentiles over time with chaos events, connected devices, reconnect-time distribution)
// and of a capacity search, rendered to SVG with Vega-Lite from k6's JSON samples.
import { createReadStream, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { constants as zlib, createGunzip } from 'node:zlib';
import { engineOf } from '../core/run-contract.ts';
import { generatorLagName } from '../core/verdict.ts';
import { SERVER_SCRAPE_MS } from './server-watch.ts';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

/** The metrics the charts and the report read from k6's samples. */
const WANTED = new Set([
  'wake_ack_latency',
  'response_latency',
  'devices_connected',
  'reconnect_time',
  'connection_drops',
  'unplanned_drops',
  'vu_loop_lag',
  'audio_slips',
  'audio_frames',
  'session_drop_rate',
  'sessions_dropped',
  'devices_started',
  'recovery_time',
  'wakes',
  'sessions_started',
  'sessions_completed',
]);

interface Sample {
  metric: string;
  t: number;
  value: number;
  tags: Record<string, string>;
}

/** Streams k6's `--out json` file, keeping only the device metrics the charts use. */
async function readSamples(path: string): Promise<Sample[]> {
  const out: Sample[] = [];
  // A k6 that was killed (its memory guard) leaves the file cut short: what was written is read, the torn end skipped.
  const gunzip = createGunzip({ finishFlush: zlib.Z_SYNC_FLUSH });
  const input = path.endsWith('.gz') ? createReadStream(path).pipe(gunzip) : createReadStream(path);
  const rl = createInterface({ input, crlfDelay: Infinity });
  for await (const line of rl) {
    if (!line.startsWith('{"metric":"') && !line.includes('"type":"Point"')) continue;
    const m = /"metric":"([a-z_]+)"/.exec(line);
    if (!m || !WANTED.has(m[1]!)) continue;
    let p: { type: string; metric: string; data: { time: string; value: number; tags?: Record<string, string> } };
    try {
      p = JSON.parse(line) as typeof p;
    } catch {
      continue;
    }
    if (p.type !== 'Point') continue;
    out.push({ metric: p.metric, t: Date.parse(p.data.time), value: p.data.value, tags: p.data.tags ?? {} });
  }
  return out;
}

export function quantile(sorted: number[], q: number): number {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i]!;
}

async function toSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}

/** Charts span the report's width (1,040 px of drawing; the page scales the SVG to its column). */
const WIDTH = 1040;
const BASE = {
  $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
  width: WIDTH,
  height: 240,
  background: 'white',
  config: { legend: { labelLimit: 0, orient: 'bottom', columns: 4 } },
} as const;

/** Latency ticks a person reads: 10, 20, 50, 100, 200, 500 ms, 1, 2, 5, 10, 20, 50 s. */
const LATENCY_TICKS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000];

/** A latency axis on a log scale with labelled ticks at the values that matter, inside the data's range. */
function latencyAxis(values: number[], title: string): object {
  const pos = values.filter((v) => v > 0);
  const lo = pos.length ? Math.min(...pos) : 1;
  const hi = pos.length ? Math.max(...pos) : 1000;
  // The domain runs from the tick below the smallest value to the tick above the largest, so both ends are labelled.
  const from = [...LATENCY_TICKS].reverse().find((t) => t <= lo) ?? 1;
  const to = LATENCY_TICKS.find((t) => t >= hi) ?? hi;
  const ticks = LATENCY_TICKS.filter((t) => t >= from && t <= to);
  return {
    type: 'quantitative',
    title,
    scale: { type: 'log', domain: [from, to], clamp: true, nice: false },
    axis: {
      values: ticks,
      labelExpr: "datum.value >= 1000 ? format(datum.value / 1000, '~g') + ' s' : datum.value + ' ms'",
      grid: true,
    },
  };
}

/** One colour per profile, the same in every chart of the run (a categorical palette with 20 distinct colours). */
const PALETTE = [
  '#1f77b4',
  '#ff7f0e',
  '#2ca02c',
  '#d62728',
  '#9467bd',
  '#8c564b',
  '#e377c2',
  '#7f7f7f',
  '#bcbd22',
  '#17becf',
  '#aec7e8',
  '#ffbb78',
  '#98df8a',
  '#ff9896',
  '#c5b0d5',
  '#c49c94',
  '#f7b6d2',
  '#c7c7c7',
  '#dbdb8d',
  '#9edae5',
];
function profileColors(profiles: string[]): { domain: string[]; range: string[] } {
  const domain = [...new Set(profiles)].sort();
  return { domain, range: domain.map((_, i) => PALETTE[i % PALETTE.length]!) };
}
const XBASE = { field: 's', type: 'quantitative', title: 'seconds into the run' } as const;

/** A chaos window as the charts draw it: shaded from onset to end, labelled at the top. */
interface Window {
  from: number;
  to: number;
  label: string;
  row: number;
}

/** Pairs onsets with ends into windows; overlapping windows get their labels on separate rows. */
function chaosWindows(
  events: { fault: string; phase: string; t: number; index?: number }[],
  sec: (t: number) => number,
  endS: number,
): Window[] {
  const open = new Map<string, number>();
  const out: Window[] = [];
  for (const e of [...events].sort((a, b) => a.t - b.t)) {
    const key = `${e.index ?? ''}:${e.fault}`;
    if (e.phase === 'onset') open.set(key, e.t);
    else if (open.has(key)) {
      out.push({ from: +sec(open.get(key)!).toFixed(2), to: +sec(e.t).toFixed(2), label: e.fault, row: 0 });
      open.delete(key);
    }
  }
  for (const [key, t] of open) out.push({ from: +sec(t).toFixed(2), to: endS, label: key.split(':')[1]!, row: 0 });
  out.sort((a, b) => a.from - b.from);
  // A label sits on the first row whose previous label (its text, ~6 px a character on a WIDTH-px axis) ended before
  // this window starts: labels of near windows never overlap, whatever the run's length.
  const sPerChar = (6 * Math.max(endS, 1)) / WIDTH;
  const rowEnds: number[] = [];
  for (const w of out) {
    let r = rowEnds.findIndex((end) => end <= w.from);
    if (r < 0) r = rowEnds.length;
    rowEnds[r] = Math.max(w.to, w.from + (w.label.length + 1) * sPerChar);
    w.row = r;
  }
  return out;
}

/** Layers that shade the chaos windows and label them on the chart's top edge. */
function windowLayers(windows: Window[]): object[] {
  if (!windows.length) return [];
  return [
    {
      data: { values: windows },
      mark: { type: 'rect', color: '#e67e22', opacity: 0.15 },
      encoding: { x: { field: 'from', type: 'quantitative' }, x2: { field: 'to' } },
    },
    {
      data: { values: windows.map((w) => ({ ...w, y: 4 + w.row * 11 })) },
      mark: { type: 'text', align: 'left', baseline: 'top', dx: 2, fontSize: 10, color: '#a04000' },
      encoding: {
        x: { field: 'from', type: 'quantitative' },
        y: { field: 'y', type: 'quantitative', scale: null },
        text: { field: 'label' },
      },
    },
  ];
}

/** Per-second fleet totals of a per-VU gauge (the last sample of each VU and key, summed over VUs). */
function sumPerSecond(
  samples: Sample[],
  metric: string,
  sec: (t: number) => number,
  key: (s: Sample) => string,
): { s: number; key: string; value: number }[] {
  const series = new Map<string, Map<string, Map<number, number>>>();
  let maxS = 0;
  let minS = 0;
  for (const s of samples) {
    if (s.metric !== metric) continue;
    const k = key(s);
    const vu = s.tags.vu ?? '0';
    const at = Math.floor(sec(s.t));
    maxS = Math.max(maxS, at);
    minS = Math.min(minS, at);
    const byVu = series.get(k) ?? series.set(k, new Map()).get(k)!;
    (byVu.get(vu) ?? byVu.set(vu, new Map()).get(vu)!).set(at, s.value);
  }
  const out: { s: number; key: string; value: number }[] = [];
  for (const [k, byVu] of series) {
    const last = new Map<string, number>();
    for (let s = minS; s <= maxS; s++) {
      let total = 0;
      for (const [vu, m] of byVu) {
        if (m.has(s)) last.set(vu, m.get(s)!);
        total += last.get(vu) ?? 0;
      }
      out.push({ s, key: k, value: total });
    }
  }
  return out;
}

type StackedRow = { s: number; s2: number; n: number; y0: number; y1: number } & Record<string, string | number>;

/**
 * A counter per whole second and one tag's value (a missing tag is '?'), stacked by hand from 0 at each second
 * (y0..y1): Vega-Lite's own stack of bars with an x2 drew them floating.
 */
function countsPerSecond(samples: Sample[], metric: string, tag: string, sec: (t: number) => number): StackedRow[] {
  const by = new Map<string, { s: number; s2: number; key: string; n: number }>();
  for (const d of samples) {
    if (d.metric !== metric) continue;
    const at = Math.floor(sec(d.t));
    const key = d.tags[tag] ?? '?';
    const row = by.get(`${at}:${key}`) ?? by.set(`${at}:${key}`, { s: at, s2: at + 1, key, n: 0 }).get(`${at}:${key}`)!;
    row.n += d.value;
  }
  const base = new Map<number, number>();
  return [...by.values()]
    .sort((a, b) => a.s - b.s || a.key.localeCompare(b.key))
    .map(({ s, s2, key, n }) => {
      const y0 = base.get(s) ?? 0;
      base.set(s, y0 + n);
      return { s, s2, [tag]: key, n, y0, y1: y0 + n } as StackedRow;
    });
}

/** The spec of a per-second stacked bar chart over the fault windows (countsPerSecond's rows). */
function stackedBars(o: {
  title: string;
  rows: StackedRow[];
  field: string;
  yTitle: string;
  color: { title: string; scale: object };
  x: object;
  windows: Window[];
}): object {
  return {
    ...BASE,
    title: o.title,
    layer: [
      ...windowLayers(o.windows),
      {
        data: { values: o.rows },
        mark: { type: 'bar' },
        encoding: {
          x: o.x,
          x2: { field: 's2' },
          y: {
            field: 'y1',
            type: 'quantitative',
            title: o.yTitle,
            scale: { domainMin: 0 },
            axis: { tickMinStep: 1, format: 'd' },
          },
          y2: { field: 'y0' },
          color: { field: o.field, type: 'nominal', ...o.color },
        },
      },
    ],
  };
}

/** The percentiles of wake ack and response latency in each chaos phase: 1..99, 99.9 and 100 (a log axis floor of 1 ms). */
function latencyDistribution(samples: Sample[]): { metric: string; phase: string; pct: number; ms: number }[] {
  const out: { metric: string; phase: string; pct: number; ms: number }[] = [];
  const pcts = [...Array.from({ length: 99 }, (_, i) => i + 1), 99.9, 100];
  for (const [metric, label] of [
    ['wake_ack_latency', 'wake ack'],
    ['response_latency', 'response'],
  ] as const)
    for (const phase of PHASE_COLORS.domain) {
      const v = samples
        .filter((x) => x.metric === metric && x.tags.chaos === phase)
        .map((x) => x.value)
        .sort((a, b) => a - b);
      if (v.length)
        for (const pct of pcts) out.push({ metric: label, phase, pct, ms: Math.max(1, quantile(v, pct / 100)) });
    }
  return out;
}

/** Percentiles of a trend per bucket of seconds, one series per key. */
function percentilesPer(
  samples: Sample[],
  metric: string,
  sec: (t: number) => number,
  bucket: number,
  qs: [string, number][],
  key: (s: Sample) => string = () => '',
): { s: number; series: string; ms: number }[] {
  const buckets = new Map<string, Map<number, number[]>>();
  for (const s of samples) {
    if (s.metric !== metric) continue;
    const k = key(s);
    const b = Math.floor(sec(s.t) / bucket) * bucket;
    const m = buckets.get(k) ?? buckets.set(k, new Map()).get(k)!;
    (m.get(b) ?? m.set(b, []).get(b)!).push(s.value);
  }
  const rows: { s: number; series: string; ms: number }[] = [];
  for (const [k, m] of buckets) {
    for (const [b, vals] of m) {
      vals.sort((x, y) => x - y);
      for (const [name, q] of qs)
        rows.push({ s: b, series: `${k}${k && name ? ' ' : ''}${name}`, ms: quantile(vals, q) });
    }
  }
  return rows.sort((a, b) => a.s - b.s);
}

export interface Chart {
  file: string;
  title: string;
  svg: string;
  /** The numbers the chart draws, one object a row (written beside the SVG as CSV). */
  rows: Record<string, unknown>[];
}

export interface RunSeries {
  samples: Sample[];
  t0: number;
  sec: (t: number) => number;
  windows: Window[];
  /** Fleet total connected per second, and per profile when the fleet mixes them. */
  connected: { s: number; key: string; value: number }[];
  /** Seconds from the timeline's zero to the last sample: every time axis spans the whole run. */
  endS: number;
  /** Seconds of the first sample (negative when the devices started before the timeline's zero). */
  startS: number;
  /** The wall-clock time of second 0 (ISO 8601, UTC): to line the charts up with server logs. */
  zeroIso: string;
  /** Each process's RSS (MiB) and CPU (% of a core) per second, from process-samples.csv (empty without it). */
  processes: ProcessPoint[];
  /** The server's own metrics every few seconds, from server-samples.csv (empty without it). */
  server: ServerPoint[];
  /** The engine that ran the devices (run.json parameters.engine): names the generator's lag. */
  engine?: string;
}

/** A server-samples.csv row (scripts/server-watch.ts) on the timeline's clock; null where the server had no such metric. */
type ServerPoint = {
  s: number;
  cpu_pct: number | null;
  rss_mib: number | null;
  loop_lag_ms: number | null;
  connections: number | null;
};

/** A CSV the run wrote (toCsv: a header, no quoted cells in these files) as rows of named cells. */
function csvRows(path: string): Record<string, string>[] {
  if (!existsSync(path)) return [];
  const [head, ...lines] = readFileSync(path, 'utf8').trim().split('\n');
  const cols = head!.split(',');
  return lines.map((l) => {
    const f = l.split(',');
    return Object.fromEntries(cols.map((c, i) => [c, f[i] ?? '']));
  });
}

function serverPoints(dir: string, sec: (t: number) => number): ServerPoint[] {
  const num = (v: string | undefined) => (v === undefined || v === '' ? null : Number(v));
  return csvRows(join(dir, 'server-samples.csv')).map((r) => ({
    s: +sec(Number(r.t)).toFixed(3),
    cpu_pct: num(r.cpu_pct),
    rss_mib: num(r.rss_mib),
    loop_lag_ms: num(r.loop_lag_ms),
    connections: num(r.connections),
  }));
}

type ProcessPoint = {
  s: number;
  process: string;
  rss_mib: number;
  cpu_pct: number;
};

/** process-samples.csv (the run's per-second samples of its processes, scripts/run.ts) on the timeline's clock. */
function processPoints(dir: string, sec: (t: number) => number): ProcessPoint[] {
  return csvRows(join(dir, 'process-samples.csv')).map((r) => ({
    s: +sec(Number(r.t)).toFixed(3),
    process: r.process!,
    rss_mib: Number(r.rss_mib),
    cpu_pct: Number(r.cpu_pct),
  }));
}

/** Reads a run folder's samples and chaos events; null when the run kept no samples. */
export async function runSeries(dir: string): Promise<RunSeries | null> {
  const samplesPath = join(dir, 'samples.json.gz');
  if (!existsSync(samplesPath)) return null;
  const samples = await readSamples(samplesPath);
  if (!samples.length) return null;
  const first = samples.reduce((m, s) => Math.min(m, s.t), Infinity);
  const tEnd = samples.reduce((m, s) => Math.max(m, s.t), 0);
  // Second 0 is the timeline's zero (run.json resolved.epoch_ms), the clock the fault windows and the recovery table
  // count from; a run without one counts from its first sample.
  let t0 = first;
  let engine: string | undefined;
  try {
    const run = JSON.parse(readFileSync(join(dir, 'run.json'), 'utf8')) as {
      resolved?: { epoch_ms?: number };
      parameters?: Record<string, unknown>;
    };
    const epoch = run.resolved?.epoch_ms;
    if (typeof epoch === 'number' && Number.isFinite(epoch)) t0 = epoch;
    engine = engineOf(run);
  } catch {
    /* no run.json yet: the first sample */
  }
  const sec = (t: number) => (t - t0) / 1000;
  let events: { fault: string; phase: string; t: number; index?: number }[] = [];
  try {
    const ev = JSON.parse(readFileSync(join(dir, 'events.json'), 'utf8')) as
      { applied?: typeof events; planned?: typeof events } | typeof events;
    events = Array.isArray(ev) ? ev : ((ev.applied?.length ? ev.applied : ev.planned) ?? []);
  } catch {
    /* no chaos */
  }
  const windows = chaosWindows(events, sec, +sec(tEnd).toFixed(2));
  // Every VU reports its connected devices per profile (scenarios/lib/*-fleet.ts): the fleet total is their sum at each
  // second, whatever mix each VU holds. A run from before profiles were always tagged has untagged series; they count
  // in the total and draw no profile line.
  const series = sumPerSecond(samples, 'devices_connected', sec, (s) => s.tags.profile ?? '');
  const total = new Map<number, number>();
  for (const r of series) total.set(r.s, (total.get(r.s) ?? 0) + r.value);
  const profiles = new Set(series.filter((r) => r.key !== '').map((r) => r.key));
  const connected = [
    ...[...total].map(([s, value]) => ({ s, key: 'all devices', value })),
    ...(profiles.size > 1 ? series.filter((r) => r.key !== '') : []),
  ];
  return {
    samples,
    t0,
    sec,
    windows,
    connected,
    endS: Math.ceil(sec(tEnd)),
    startS: Math.min(0, Math.floor(sec(first))),
    zeroIso: new Date(t0).toISOString(),
    processes: processPoints(dir, sec),
    server: serverPoints(dir, sec),
    engine,
  };
}

/** What the report knows beyond the samples: each SLO's value in each phase of a chaos run (from k6's summary). */
export type PhaseValue = {
  slo: string;
  phase: string;
  value: number;
  /** The SLO's target in the value's unit (drawn as a line). */
  target: number;
};

const SERIES_COLORS: Record<string, string> = {
  'wake ack p50': '#6baed6',
  'wake ack p95': '#08519c',
  'response p50': '#fd8d3c',
  'response p95': '#a63603',
  'lag p95': '#31a354',
  'lag max': '#a1d99b',
};
const PHASE_COLORS = { domain: ['steady', 'during', 'recovery'], range: ['#1e8449', '#e67e22', '#2e86c1'] };
const DROP_REASONS = {
  domain: ['lost', 'interrupted', 'timeout', 'error'],
  range: ['#c0392b', '#8e44ad', '#7f8c8d', '#d35400'],
};

/** A fixed colour per named series, so that no two series of a chart share one. */
function seriesScale(names: string[]): { domain: string[]; range: string[] } {
  const domain = [...new Set(names)];
  return { domain, range: domain.map((n, i) => SERIES_COLORS[n] ?? PALETTE[i % PALETTE.length]!) };
}

/** Every chart of a run, as SVG strings: report.html inlines them and keeps them as files beside it. */
export async function buildRunCharts(rs: RunSeries, phases: PhaseValue[] = []): Promise<Chart[]> {
  const { samples, sec, windows } = rs;
  // Seconds from the timeline's zero, whose wall-clock time the axis title gives (line it up with server logs).
  const XT = {
    ...XBASE,
    title: `seconds into the run (0 = ${rs.zeroIso.slice(11, 19)} UTC, ${rs.zeroIso.slice(0, 10)})`,
  };
  const X = { ...XT, scale: { domain: [rs.startS, rs.endS], nice: false } };
  const charts: Chart[] = [];
  const chaosNote = windows.length ? ' (fault windows shaded)' : '';
  const profiles = [...new Set(samples.filter((s) => s.tags.profile).map((s) => s.tags.profile!))];
  const pc = profileColors(profiles);

  if (rs.connected.length) {
    const title = `Connected devices, fleet total${rs.connected.some((r) => r.key !== 'all devices') ? ' and per profile' : ''}${chaosNote}`;
    const keys = [...new Set(rs.connected.map((r) => r.key))].sort((a, b) =>
      a === 'all devices' ? -1 : b === 'all devices' ? 1 : a.localeCompare(b),
    );
    const color = {
      domain: keys,
      range: keys.map((k) => (k === 'all devices' ? '#1d2330' : (pc.range[pc.domain.indexOf(k)] ?? '#7f7f7f'))),
    };
    const spec = {
      ...BASE,
      title,
      layer: [
        ...windowLayers(windows),
        {
          data: { values: rs.connected },
          mark: { type: 'line', interpolate: 'step-after', strokeWidth: 2 },
          encoding: {
            x: X,
            y: { field: 'value', type: 'quantitative', title: 'connected devices' },
            color: { field: 'key', type: 'nominal', title: null, scale: color },
          },
        },
      ],
    };
    charts.push({ file: 'connected.svg', title, svg: await toSvg(spec as TopLevelSpec), rows: rs.connected });
  }

  // A log axis cannot show 0 ms: such a bucket is drawn at 1 ms, the axis's floor.
  const lat = [
    ...percentilesPer(samples, 'wake_ack_latency', sec, 2, [
      ['wake ack p50', 0.5],
      ['wake ack p95', 0.95],
    ]),
    ...percentilesPer(samples, 'response_latency', sec, 2, [
      ['response p50', 0.5],
      ['response p95', 0.95],
    ]),
  ].map((r) => ({ ...r, ms: Math.max(1, r.ms) }));
  if (lat.length) {
    const title = `Latency after the wake word, percentiles per 2 s${chaosNote}`;
    const spec = {
      ...BASE,
      title,
      layer: [
        ...windowLayers(windows),
        {
          data: { values: lat },
          mark: { type: 'line', point: true, strokeWidth: 2 },
          encoding: {
            x: X,
            y: {
              field: 'ms',
              ...latencyAxis(
                lat.map((r) => r.ms),
                'latency (log scale)',
              ),
            },
            color: { field: 'series', type: 'nominal', title: null, scale: seriesScale(lat.map((r) => r.series)) },
          },
        },
      ],
    };
    charts.push({ file: 'latency.svg', title, svg: await toSvg(spec as TopLevelSpec), rows: lat });
  }

  // The whole distribution, per phase of the run: what the users waited in steady state, during faults and after,
  // every percentile rather than two (a fault's tail hides in a p95 per 2 s).
  const dist = latencyDistribution(samples);
  if (dist.length) {
    const title = 'Latency distribution per phase: the percentile of sessions answered within each latency';
    const panel = (metric: string) => {
      const rows = dist.filter((r) => r.metric === metric);
      return {
        title: { text: metric, fontSize: 12, anchor: 'start' },
        width: BASE.width,
        height: 160,
        data: { values: rows },
        mark: { type: 'line', strokeWidth: 2, interpolate: 'step-after' },
        encoding: {
          x: {
            field: 'ms',
            ...latencyAxis(
              rows.map((r) => r.ms),
              'latency (log scale)',
            ),
          },
          y: { field: 'pct', type: 'quantitative', title: 'percentile', scale: { domain: [0, 100] } },
          color: { field: 'phase', type: 'nominal', title: 'phase', scale: PHASE_COLORS },
        },
      };
    };
    const spec = {
      $schema: BASE.$schema,
      background: BASE.background,
      config: BASE.config,
      title,
      vconcat: [...new Set(dist.map((r) => r.metric))].map(panel),
    };
    charts.push({ file: 'latency-phases.svg', title, svg: await toSvg(spec as TopLevelSpec), rows: dist });
  }

  if (profiles.length > 1) {
    // Small multiples: one panel per profile (its own colour), wake ack p95 solid, response p95 dashed.
    const byProfile = (s: Sample) => s.tags.profile ?? '?';
    const rows = [
      ...percentilesPer(samples, 'wake_ack_latency', sec, 5, [['', 0.95]], byProfile).map((r) => ({
        ...r,
        profile: r.series,
        metric: 'wake ack p95',
      })),
      ...percentilesPer(samples, 'response_latency', sec, 5, [['', 0.95]], byProfile).map((r) => ({
        ...r,
        profile: r.series,
        metric: 'response p95',
      })),
    ].map((r) => ({ ...r, ms: Math.max(1, r.ms) }));
    if (rows.length) {
      // Small multiples have no fault shading of their own: the fleet's charts above show the windows.
      const title = 'p95 latency per profile, per 5 s (wake ack solid, response dashed)';
      const cols = 2;
      const spec = {
        $schema: BASE.$schema,
        background: 'white',
        title,
        data: { values: rows },
        facet: { field: 'profile', type: 'nominal', title: null },
        columns: cols,
        spec: {
          width: Math.floor(WIDTH / cols) - 60,
          height: 140,
          mark: { type: 'line', point: true, strokeWidth: 2 },
          encoding: {
            x: X,
            y: {
              field: 'ms',
              ...latencyAxis(
                rows.map((r) => r.ms),
                'p95',
              ),
            },
            color: { field: 'profile', type: 'nominal', title: 'profile', scale: pc },
            // The two series differ by dash and by marker, in the chart and in its legend.
            strokeDash: {
              field: 'metric',
              type: 'nominal',
              title: null,
              scale: {
                domain: ['wake ack p95', 'response p95'],
                range: [
                  [1, 0],
                  [6, 3],
                ],
              },
              legend: { symbolType: 'stroke', symbolStrokeColor: '#333', symbolSize: 300 },
            },
            shape: {
              field: 'metric',
              type: 'nominal',
              title: null,
              scale: { domain: ['wake ack p95', 'response p95'], range: ['circle', 'triangle-up'] },
            },
          },
        },
        config: { legend: { labelLimit: 0, orient: 'bottom', columns: 4 } },
      };
      charts.push({
        file: 'latency-profiles.svg',
        title,
        svg: await toSvg(spec as unknown as TopLevelSpec),
        rows,
      });
    }
  }

  // Throughput: wakes, sessions started and sessions completed per second, averaged over 5 s buckets, every bucket of
  // the run drawn (a quiet bucket is 0, not a line carried across it).
  const BUCKET_S = 5;
  const through = new Map<string, { s: number; series: string; n: number }>();
  const names: Record<string, string> = {
    wakes: 'wakes/s',
    sessions_started: 'sessions started/s',
    sessions_completed: 'sessions completed/s',
  };
  const seen = new Set<string>();
  for (const d of samples) {
    const series = names[d.metric];
    if (!series) continue;
    seen.add(series);
    const at = Math.floor(sec(d.t) / BUCKET_S) * BUCKET_S;
    const k = `${at}:${series}`;
    (through.get(k) ?? through.set(k, { s: at, series, n: 0 }).get(k)!).n += d.value / BUCKET_S;
  }
  for (const series of seen)
    for (let b = Math.ceil(rs.startS / BUCKET_S) * BUCKET_S; b < rs.endS; b += BUCKET_S)
      if (!through.has(`${b}:${series}`)) through.set(`${b}:${series}`, { s: b, series, n: 0 });
  if (through.size) {
    const rows = [...through.values()].sort((a, b) => a.s - b.s || a.series.localeCompare(b.series));
    const title = `Throughput: wakes and sessions per second, per ${BUCKET_S} s${chaosNote}`;
    const spec = {
      ...BASE,
      height: 180,
      title,
      layer: [
        ...windowLayers(windows),
        {
          data: { values: rows },
          mark: { type: 'line', point: true, strokeWidth: 2, interpolate: 'step-after', clip: true },
          encoding: {
            x: X,
            y: {
              field: 'n',
              type: 'quantitative',
              title: 'per second',
              scale: { domainMin: 0 },
              axis: { tickMinStep: 1 },
            },
            color: {
              field: 'series',
              type: 'nominal',
              title: null,
              scale: { domain: Object.values(names), range: ['#8e44ad', '#16a085', '#d35400'] },
            },
            shape: {
              field: 'series',
              type: 'nominal',
              title: null,
              scale: { domain: Object.values(names), range: ['circle', 'square', 'triangle-up'] },
            },
          },
        },
      ],
    };
    charts.push({ file: 'throughput.svg', title, svg: await toSvg(spec as TopLevelSpec), rows });
  }

  // Links lost per second and close code, and conversations lost per second and the reason they ended: bars one
  // second wide on the run's own time axis, stacked from 0.
  const drops = countsPerSecond(samples, 'connection_drops', 'code', sec);
  if (drops.length) {
    const title = `Links lost per second, by close code${chaosNote}`;
    const color = { title: 'close code', scale: seriesScale(drops.map((d) => String(d.code))) };
    const spec = stackedBars({ title, rows: drops, field: 'code', yTitle: 'links lost', color, x: X, windows });
    charts.push({ file: 'drops.svg', title, svg: await toSvg(spec as TopLevelSpec), rows: drops });
  }
  const lost = countsPerSecond(samples, 'sessions_dropped', 'reason', sec);
  if (lost.length) {
    const title = `Conversations dropped per second, by reason${chaosNote}`;
    const color = { title: 'reason', scale: DROP_REASONS };
    const spec = {
      ...stackedBars({ title, rows: lost, field: 'reason', yTitle: 'sessions dropped', color, x: X, windows }),
      height: 180,
    };
    charts.push({ file: 'sessions-dropped.svg', title, svg: await toSvg(spec as TopLevelSpec), rows: lost });
  }

  const rt = samples
    .filter((s) => s.metric === 'reconnect_time')
    .map((s) => ({ seconds: s.value / 1000, profile: s.tags.profile ?? '?' }));
  if (rt.length) {
    const title = `Reconnect time distribution (${rt.length} reconnects)`;
    const spec = {
      ...BASE,
      title,
      data: { values: rt },
      mark: 'bar',
      encoding: {
        x: { field: 'seconds', bin: { maxbins: 40 }, type: 'quantitative', title: 'reconnect time (s)' },
        y: { aggregate: 'count', type: 'quantitative', title: 'reconnects' },
        color: { field: 'profile', type: 'nominal', title: 'profile', scale: pc },
      },
    };
    charts.push({ file: 'reconnect.svg', title, svg: await toSvg(spec as TopLevelSpec), rows: rt });
  }

  // Recovery per fault: how long each profile took to be back after each fault (the worst slice of the fleet).
  const rec = new Map<string, { fault: string; profile: string; seconds: number }>();
  for (const s of samples) {
    if (s.metric !== 'recovery_time') continue;
    const k = `${s.tags.fault}\u0000${s.tags.profile}`;
    const prev = rec.get(k);
    if (!prev || prev.seconds < s.value / 1000)
      rec.set(k, { fault: s.tags.fault ?? '?', profile: s.tags.profile ?? '?', seconds: s.value / 1000 });
  }
  // In timeline order: the fault label's number ("3:cut") first.
  const recRows = [...rec.values()].sort((a, b) => parseInt(a.fault, 10) - parseInt(b.fault, 10));
  if (rec.size) {
    const title = 'Recovery per fault: its end until each profile was back at its pre-fault level';
    const spec = {
      ...BASE,
      height: 200,
      title,
      data: { values: recRows },
      mark: 'bar',
      encoding: {
        x: { field: 'fault', type: 'nominal', title: 'fault (in timeline order)', sort: null, axis: { labelAngle: 0 } },
        xOffset: { field: 'profile', type: 'nominal', scale: { domain: pc.domain } },
        y: { field: 'seconds', type: 'quantitative', title: 'back after (s)' },
        color: { field: 'profile', type: 'nominal', title: 'profile', scale: pc },
      },
    };
    charts.push({ file: 'recovery.svg', title, svg: await toSvg(spec as TopLevelSpec), rows: recRows });
  }

  // Each steady SLO's metric in each phase: what the faults cost, beside what steady state met.
  if (phases.length) {
    const title = 'Each SLO in steady state, during faults and in recovery (line: the SLO target)';
    const spec = {
      $schema: BASE.$schema,
      background: 'white',
      title,
      data: { values: phases },
      facet: { field: 'slo', type: 'nominal', title: null },
      columns: 4,
      // Each panel its own scale and its own phase labels (not only under the last row).
      resolve: { scale: { y: 'independent' }, axis: { x: 'independent' } },
      spec: {
        width: Math.floor(WIDTH / 4) - 70,
        height: 110,
        layer: [
          {
            mark: 'bar',
            encoding: {
              x: { field: 'phase', type: 'nominal', title: null, sort: PHASE_COLORS.domain, axis: { labelAngle: 0 } },
              // A panel whose values are all zero still reads 0, 1, … (never 0.000000).
              y: {
                field: 'value',
                type: 'quantitative',
                title: null,
                scale: { domainMin: 0, nice: true },
                axis: { format: ',~f', tickCount: 4 },
              },
              color: { field: 'phase', type: 'nominal', title: 'phase', scale: PHASE_COLORS },
            },
          },
          {
            mark: { type: 'rule', color: '#c0392b', strokeWidth: 2, strokeDash: [4, 2] },
            encoding: { y: { field: 'target', type: 'quantitative', aggregate: 'max' } },
          },
        ],
      },
      config: { legend: { orient: 'bottom' } },
    };
    charts.push({ file: 'phases.svg', title, svg: await toSvg(spec as unknown as TopLevelSpec), rows: phases });
  }

  // The tester's own health: how late its event loops ran, and uplink frames it sent late.
  const lag = percentilesPer(samples, 'vu_loop_lag', sec, 1, [
    ['lag p95', 0.95],
    ['lag max', 1],
  ]);
  if (lag.length) {
    const title = `The generator's own delay: ${generatorLagName(rs.engine)} per second${chaosNote}`;
    const spec = {
      ...BASE,
      height: 180,
      title,
      layer: [
        ...windowLayers(windows),
        {
          data: { values: lag },
          mark: { type: 'line', strokeWidth: 2 },
          encoding: {
            x: X,
            y: { field: 'ms', type: 'quantitative', title: 'lag (ms)' },
            color: { field: 'series', type: 'nominal', title: null, scale: seriesScale(lag.map((r) => r.series)) },
          },
        },
      ],
    };
    charts.push({ file: 'tester.svg', title, svg: await toSvg(spec as TopLevelSpec), rows: lag });
  }

  // Every process of the run (k6, the engine, Toxiproxy, the reference server) over time: which one ran out first.
  if (rs.processes.length) {
    const title = `Processes over time: memory (RSS) and CPU per second${chaosNote}`;
    const color = {
      field: 'process',
      type: 'nominal',
      title: null,
      scale: seriesScale([...new Set(rs.processes.map((p) => p.process))]),
    };
    const panel = (field: 'rss_mib' | 'cpu_pct', axis: string) => ({
      height: 140,
      width: BASE.width,
      layer: [
        ...windowLayers(windows),
        {
          data: { values: rs.processes },
          mark: { type: 'line', strokeWidth: 2 },
          encoding: { x: X, y: { field, type: 'quantitative', title: axis }, color },
        },
      ],
    });
    const spec = {
      $schema: BASE.$schema,
      background: BASE.background,
      config: BASE.config,
      title,
      vconcat: [panel('rss_mib', 'RSS (MiB)'), panel('cpu_pct', 'CPU (% of a core)')],
    };
    charts.push({ file: 'processes.svg', title, svg: await toSvg(spec as TopLevelSpec), rows: rs.processes });
  }

  // The server's own view (its /metrics every few seconds): the panels it has numbers for.
  const serverPanels = (
    [
      ['loop_lag_ms', 'event-loop lag p99 (ms)'],
      ['cpu_pct', 'CPU (% of a core)'],
      ['rss_mib', 'RSS (MiB)'],
      ['connections', 'connections'],
    ] as const
  ).filter(([field]) => rs.server.some((p) => p[field] !== null));
  if (serverPanels.length) {
    const title = `The server's own view: its /metrics read every ${SERVER_SCRAPE_MS / 1000} s${chaosNote}`;
    const spec = {
      $schema: BASE.$schema,
      background: BASE.background,
      config: BASE.config,
      title,
      vconcat: serverPanels.map(([field, axis]) => ({
        height: 110,
        width: BASE.width,
        layer: [
          ...windowLayers(windows),
          {
            data: { values: rs.server.filter((p) => p[field] !== null) },
            mark: { type: 'line', strokeWidth: 2, color: '#5b2c6f', point: { color: '#5b2c6f' } },
            encoding: { x: X, y: { field, type: 'quantitative', title: axis } },
          },
        ],
      })),
    };
    charts.push({ file: 'server.svg', title, svg: await toSvg(spec as TopLevelSpec), rows: rs.server });
  }
  return charts;
}

export interface CapacityPoint {
  devices: number;
  pass: boolean;
  wake_ack_p95: number | null;
  response_p95: number | null;
  drop_rate: number | null;
}

/** p95 latencies and drop rate against device count, with the knee (the answer) marked. */
export async function renderCapacityChart(points: CapacityPoint[], knee: number | null, path: string): Promise<void> {
  const lat = points.flatMap((p) => [
    ...(p.wake_ack_p95 !== null ? [{ devices: p.devices, series: 'wake_ack p95 (ms)', value: p.wake_ack_p95 }] : []),
    ...(p.response_p95 !== null ? [{ devices: p.devices, series: 'response p95 (ms)', value: p.response_p95 }] : []),
  ]);
  const drop = points.map((p) => ({
    devices: p.devices,
    drop_pct: (p.drop_rate ?? 0) * 100,
    verdict: p.pass ? 'pass' : 'fail',
  }));
  const kneeLayer = knee
    ? [
        {
          data: { values: [{ devices: knee, label: `holds ${knee}` }] },
          layer: [
            {
              mark: { type: 'rule', color: '#27ae60', strokeWidth: 2 },
              encoding: { x: { field: 'devices', type: 'quantitative' } },
            },
            {
              mark: { type: 'text', dx: 4, dy: -110, align: 'left', color: '#27ae60' },
              encoding: { x: { field: 'devices', type: 'quantitative' }, text: { field: 'label' } },
            },
          ],
        },
      ]
    : [];
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    background: 'white',
    config: { legend: { labelLimit: 0 } },
    // Each panel has its own colours: a shared scale took the pass/fail domain and left the latency lines unstroked.
    resolve: { scale: { color: 'independent' } },
    title: 'Capacity: p95 latencies and drop rate against device count',
    vconcat: [
      {
        width: 640,
        height: 220,
        layer: [
          {
            data: { values: lat },
            mark: { type: 'line', point: true, strokeWidth: 2 },
            encoding: {
              x: { field: 'devices', type: 'quantitative', title: 'devices' },
              y: { field: 'value', type: 'quantitative', title: 'p95 latency (ms)' },
              color: { field: 'series', type: 'nominal', title: null },
            },
          },
          ...kneeLayer,
        ],
      },
      {
        width: 640,
        height: 140,
        layer: [
          {
            data: { values: drop },
            mark: { type: 'bar', width: 8 },
            encoding: {
              x: { field: 'devices', type: 'quantitative', title: 'devices' },
              y: { field: 'drop_pct', type: 'quantitative', title: 'dropped sessions (%)' },
              color: {
                field: 'verdict',
                type: 'nominal',
                scale: { domain: ['pass', 'fail'], range: ['#27ae60', '#c0392b'] },
              },
            },
          },
          ...kneeLayer,
        ],
      },
    ],
  };
  writeFileSync(path, await toSvg(spec as unknown as TopLevelSpec));
}
