// Charts of a run (latency percentiles over time with chaos events, connected devices, reconnect-time distribution)
// and of a capacity search, rendered to SVG with Vega-Lite from k6's JSON samples.
import { createReadStream, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { createGunzip } from 'node:zlib';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

const WANTED = new Set(['wake_ack_latency', 'response_latency', 'devices_connected', 'reconnect_time']);

interface Sample {
  metric: string;
  t: number;
  value: number;
  tags: Record<string, string>;
}

/** Streams k6's `--out json` file, keeping only the device metrics the charts use. */
export async function readSamples(path: string): Promise<Sample[]> {
  const out: Sample[] = [];
  const input = path.endsWith('.gz') ? createReadStream(path).pipe(createGunzip()) : createReadStream(path);
  const rl = createInterface({ input, crlfDelay: Infinity });
  for await (const line of rl) {
    if (!line.startsWith('{"metric":"') && !line.includes('"type":"Point"')) continue;
    const m = /"metric":"([a-z_]+)"/.exec(line);
    if (!m || !WANTED.has(m[1]!)) continue;
    const p = JSON.parse(line) as { type: string; metric: string; data: { time: string; value: number; tags?: Record<string, string> } };
    if (p.type !== 'Point') continue;
    out.push({ metric: p.metric, t: Date.parse(p.data.time), value: p.data.value, tags: p.data.tags ?? {} });
  }
  return out;
}

function quantile(sorted: number[], q: number): number {
  if (!sorted.length) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i]!;
}

export async function toSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  return svg;
}

const BASE = { $schema: 'https://vega.github.io/schema/vega-lite/v6.json', width: 720, height: 260, background: 'white' } as const;

/** Renders latency.svg, connected.svg and reconnect.svg into a run folder; returns the files written. */
export async function renderRunCharts(dir: string): Promise<string[]> {
  const samplesPath = join(dir, 'samples.json.gz');
  if (!existsSync(samplesPath)) return [];
  const samples = await readSamples(samplesPath);
  if (!samples.length) return [];
  const t0 = Math.min(...samples.map((s) => s.t));
  const sec = (t: number) => (t - t0) / 1000;
  let events: { fault: string; phase: string; t: number }[] = [];
  try {
    const ev = JSON.parse(readFileSync(join(dir, 'events.json'), 'utf8')) as { applied?: typeof events; planned?: typeof events };
    events = (ev.applied?.length ? ev.applied : ev.planned) ?? [];
  } catch {
    /* no chaos */
  }
  const eventRows = events.map((e) => ({ s: +sec(e.t).toFixed(2), label: `${e.fault} ${e.phase}` }));
  const written: string[] = [];

  // Latency percentiles per 2 s bucket.
  const BUCKET = 2;
  const rows: { s: number; series: string; ms: number }[] = [];
  for (const metric of ['wake_ack_latency', 'response_latency']) {
    const buckets = new Map<number, number[]>();
    for (const s of samples) {
      if (s.metric !== metric) continue;
      const b = Math.floor(sec(s.t) / BUCKET) * BUCKET;
      (buckets.get(b) ?? buckets.set(b, []).get(b)!).push(s.value);
    }
    for (const [b, vals] of buckets) {
      vals.sort((x, y) => x - y);
      rows.push({ s: b, series: `${metric} p50`, ms: quantile(vals, 0.5) }, { s: b, series: `${metric} p95`, ms: quantile(vals, 0.95) });
    }
  }
  if (rows.length) {
    const layers: object[] = [
      { data: { values: rows }, mark: { type: 'line', point: true }, encoding: { x: { field: 's', type: 'quantitative', title: 'seconds into the run' }, y: { field: 'ms', type: 'quantitative', title: 'latency (ms)', scale: { type: 'symlog' } }, color: { field: 'series', type: 'nominal', title: null } } },
    ];
    if (eventRows.length) {
      layers.push({ data: { values: eventRows }, mark: { type: 'rule', strokeDash: [4, 3], color: '#c0392b' }, encoding: { x: { field: 's', type: 'quantitative' } } });
      layers.push({ data: { values: eventRows }, mark: { type: 'text', angle: 270, align: 'left', dx: 4, dy: -4, fontSize: 9, color: '#c0392b' }, encoding: { x: { field: 's', type: 'quantitative' }, y: { value: 250 }, text: { field: 'label' } } });
    }
    writeFileSync(join(dir, 'latency.svg'), await toSvg({ ...BASE, title: 'Latency after the wake word, percentiles per 2 s (chaos events in red)', layer: layers } as TopLevelSpec));
    written.push('latency.svg');
  }

  // Connected devices: per second, the last sample of each VU, summed.
  const perVu = new Map<string, Map<number, number>>();
  for (const s of samples) {
    if (s.metric !== 'devices_connected') continue;
    const vu = s.tags.vu ?? '0';
    (perVu.get(vu) ?? perVu.set(vu, new Map()).get(vu)!).set(Math.floor(sec(s.t)), s.value);
  }
  if (perVu.size) {
    const maxS = Math.max(...[...perVu.values()].flatMap((m) => [...m.keys()]));
    const conn: { s: number; devices: number }[] = [];
    const last = new Map<string, number>();
    for (let s = 0; s <= maxS; s++) {
      let total = 0;
      for (const [vu, m] of perVu) {
        if (m.has(s)) last.set(vu, m.get(s)!);
        total += last.get(vu) ?? 0;
      }
      conn.push({ s, devices: total });
    }
    const layers: object[] = [{ data: { values: conn }, mark: { type: 'area', line: true, opacity: 0.3, interpolate: 'step-after' }, encoding: { x: { field: 's', type: 'quantitative', title: 'seconds into the run' }, y: { field: 'devices', type: 'quantitative', title: 'connected devices' } } }];
    if (eventRows.length) layers.push({ data: { values: eventRows }, mark: { type: 'rule', strokeDash: [4, 3], color: '#c0392b' }, encoding: { x: { field: 's', type: 'quantitative' } } });
    writeFileSync(join(dir, 'connected.svg'), await toSvg({ ...BASE, title: 'Connected devices over time (each VU samples every 1 s; chaos events in red)', layer: layers } as TopLevelSpec));
    written.push('connected.svg');
  }

  const rt = samples.filter((s) => s.metric === 'reconnect_time').map((s) => ({ seconds: s.value / 1000 }));
  if (rt.length) {
    writeFileSync(
      join(dir, 'reconnect.svg'),
      await toSvg({
        ...BASE,
        title: `Reconnect time distribution (${rt.length} reconnects)`,
        data: { values: rt },
        mark: 'bar',
        encoding: { x: { field: 'seconds', bin: { maxbins: 40 }, type: 'quantitative', title: 'reconnect time (s)' }, y: { aggregate: 'count', type: 'quantitative', title: 'reconnects' } },
      } as TopLevelSpec),
    );
    written.push('reconnect.svg');
  }
  return written;
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
  const drop = points.map((p) => ({ devices: p.devices, drop_pct: (p.drop_rate ?? 0) * 100, verdict: p.pass ? 'pass' : 'fail' }));
  const kneeLayer = knee ? [{ data: { values: [{ devices: knee, label: `holds ${knee}` }] }, layer: [{ mark: { type: 'rule', color: '#27ae60', strokeWidth: 2 }, encoding: { x: { field: 'devices', type: 'quantitative' } } }, { mark: { type: 'text', dx: 4, dy: -110, align: 'left', color: '#27ae60' }, encoding: { x: { field: 'devices', type: 'quantitative' }, text: { field: 'label' } } }] }] : [];
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    background: 'white',
    title: 'Capacity: p95 latencies and drop rate against device count',
    vconcat: [
      { width: 640, height: 220, layer: [{ data: { values: lat }, mark: { type: 'line', point: true }, encoding: { x: { field: 'devices', type: 'quantitative', title: 'devices' }, y: { field: 'value', type: 'quantitative', title: 'p95 latency (ms)' }, color: { field: 'series', type: 'nominal', title: null } } }, ...kneeLayer] },
      { width: 640, height: 140, layer: [{ data: { values: drop }, mark: { type: 'bar', width: 8 }, encoding: { x: { field: 'devices', type: 'quantitative', title: 'devices' }, y: { field: 'drop_pct', type: 'quantitative', title: 'dropped sessions (%)' }, color: { field: 'verdict', type: 'nominal', scale: { domain: ['pass', 'fail'], range: ['#27ae60', '#c0392b'] } } } }, ...kneeLayer] },
    ],
  };
  writeFileSync(path, await toSvg(spec as unknown as TopLevelSpec));
}
