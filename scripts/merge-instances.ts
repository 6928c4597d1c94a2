// One exact result from the k6 instances of a run (`wakestorm run --instances N`): every instance's raw samples (k6's
// JSON output) read back and aggregated the way one k6 process aggregates them: counters and rates summed,
// percentiles computed from all the values with k6's own rule (linear interpolation between ranks), never averaged.
import {
  copyFileSync,
  createReadStream,
  createWriteStream,
  existsSync,
  renameSync,
  rmSync,
  type WriteStream,
} from 'node:fs';
import { basename, join } from 'node:path';
import { createInterface } from 'node:readline';
import { createGunzip } from 'node:zlib';
import type { MetricSummary, SummaryData } from '../core/k6-summary.ts';
import { TREND_STATS } from '../core/summary.ts';
import type { Slo } from '../core/slo.ts';
import { judge } from '../core/verdict.ts';
import { fsProblem, readJson, writeResult } from './run-dir.ts';

/** k6's TrendSink.P: the value at rank pct·(n−1) of the sorted values, interpolated between its neighbours. */
function k6Percentile(sorted: ArrayLike<number>, pct: number): number {
  const n = sorted.length;
  if (n === 0) return 0;
  if (n === 1) return sorted[0]!;
  const i = pct * (n - 1);
  const lo = sorted[Math.floor(i)]!;
  const hi = sorted[Math.ceil(i)]!;
  return lo + (hi - lo) * (i - Math.floor(i));
}

/** A growable array of numbers (a trend's values). */
class Values {
  private buf = new Float64Array(64);
  length = 0;

  push(v: number): void {
    if (this.length === this.buf.length) {
      const next = new Float64Array(this.buf.length * 2);
      next.set(this.buf);
      this.buf = next;
    }
    this.buf[this.length++] = v;
  }

  sorted(): Float64Array {
    return this.buf.slice(0, this.length).sort();
  }
}

/** What one (sub)metric accumulates: all a trend's values; a counter's sum; a rate's passes; a gauge's extremes. */
interface Acc {
  values: Values;
  sum: number;
  passes: number;
  n: number;
  min: number;
  max: number;
  last: number;
  lastT: number;
}

const newAcc = (): Acc => ({
  values: new Values(),
  sum: 0,
  passes: 0,
  n: 0,
  min: Infinity,
  max: -Infinity,
  last: 0,
  lastT: -Infinity,
});

/** `metric{a:1,b:2}` → its base name and the tags a sample must carry to count in it. */
function parseMetricKey(key: string): { base: string; tags: [string, string][] } {
  const i = key.indexOf('{');
  if (i < 0) return { base: key, tags: [] };
  const tags = key
    .slice(i + 1, -1)
    .split(',')
    .filter(Boolean)
    .map((kv): [string, string] => {
      const j = kv.indexOf(':');
      return [kv.slice(0, j).trim(), kv.slice(j + 1).trim()];
    });
  return { base: key.slice(0, i), tags };
}

/** k6's summary values of one metric from what it accumulated (the stats k6 reports for each type). */
function valuesOf(type: string, a: Acc, durationS: number): Record<string, number> {
  switch (type) {
    case 'trend': {
      const s = a.values.sorted();
      const out: Record<string, number> = {};
      for (const stat of TREND_STATS) {
        const p = /^p\((\d+(?:\.\d+)?)\)$/.exec(stat);
        if (p) out[stat] = k6Percentile(s, Number(p[1]) / 100);
        else if (stat === 'avg') out.avg = s.length ? s.reduce((x, y) => x + y, 0) / s.length : 0;
        else if (stat === 'min') out.min = s.length ? s[0]! : 0;
        else if (stat === 'max') out.max = s.length ? s[s.length - 1]! : 0;
        else if (stat === 'med') out.med = k6Percentile(s, 0.5);
        else if (stat === 'count') out.count = s.length;
      }
      return out;
    }
    case 'counter':
      return { count: a.sum, rate: durationS > 0 ? a.sum / durationS : 0 };
    case 'rate':
      return { rate: a.n ? a.passes / a.n : 0, passes: a.passes, fails: a.n - a.passes };
    default:
      return a.n ? { value: a.last, min: a.min, max: a.max } : { value: 0, min: 0, max: 0 };
  }
}

interface MergeInput {
  /** Each instance's k6 JSON output (samples.json or .json.gz). */
  samples: string[];
  /** Each instance's own summary (k6's handleSummary data): which metrics and submetrics the run declared. */
  summaries: SummaryData[];
  /** Where to write all samples as one file (the instances' gzip members one after the other), if anywhere. */
  combinedSamples?: string;
}

/** Feeds one JSON-output file's points to `onPoint`, and its bytes to `copy` when given. */
async function readPoints(
  path: string,
  onPoint: (metric: string, value: number, time: string, tags: Record<string, string>) => void,
  copy: WriteStream | null,
): Promise<void> {
  const raw = createReadStream(path);
  if (copy) raw.on('data', (b) => copy.write(b));
  const input = path.endsWith('.gz') ? raw.pipe(createGunzip()) : raw;
  const rl = createInterface({ input, crlfDelay: Infinity });
  for await (const line of rl) {
    if (!line.includes('"type":"Point"')) continue;
    const p = JSON.parse(line) as {
      metric: string;
      data: { time: string; value: number; tags?: Record<string, string> | null };
    };
    onPoint(p.metric, p.data.value, p.data.time, p.data.tags ?? {});
  }
}

/**
 * The summary one k6 process would have computed from every instance's samples: each metric and submetric the
 * instances declared, with k6's values for its type; the run's length is the longest instance's.
 */
async function mergeInstances(input: MergeInput): Promise<SummaryData> {
  const types = new Map<string, { type: string; contains?: string }>();
  for (const s of input.summaries)
    for (const [k, m] of Object.entries(s.metrics))
      if (!types.has(k)) types.set(k, { type: m.type, contains: m.contains });
  // Per base metric: its whole-metric accumulator and its submetrics with the tags they select.
  const byBase = new Map<string, { key: string; tags: [string, string][]; acc: Acc }[]>();
  const accs = new Map<string, Acc>();
  for (const key of types.keys()) {
    const { base, tags } = parseMetricKey(key);
    const acc = newAcc();
    accs.set(key, acc);
    const list = byBase.get(base) ?? [];
    list.push({ key, tags, acc });
    byBase.set(base, list);
  }
  const copy = input.combinedSamples ? createWriteStream(input.combinedSamples) : null;
  for (const file of input.samples) {
    await readPoints(
      file,
      (metric, value, time, tags) => {
        const subs = byBase.get(metric);
        if (!subs) return;
        let t = NaN;
        for (const s of subs) {
          if (!s.tags.every(([k, v]) => tags[k] === v)) continue;
          const a = s.acc;
          const type = types.get(s.key)!.type;
          if (type === 'trend') a.values.push(value);
          else if (type === 'counter') a.sum += value;
          else if (type === 'rate') {
            a.n++;
            if (value !== 0) a.passes++;
          } else {
            a.n++;
            a.min = Math.min(a.min, value);
            a.max = Math.max(a.max, value);
            if (Number.isNaN(t)) t = Date.parse(time);
            if (t >= a.lastT) {
              a.lastT = t;
              a.last = value;
            }
          }
        }
      },
      copy,
    );
  }
  if (copy) await new Promise<void>((res, rej) => copy.end((e?: Error | null) => (e ? rej(e) : res())));
  const durationMs = Math.max(0, ...input.summaries.map((s) => s.state?.testRunDurationMs ?? 0));
  const metrics: Record<string, MetricSummary> = {};
  for (const [key, { type, contains }] of types) {
    metrics[key] = {
      type,
      ...(contains ? { contains } : {}),
      values: valuesOf(type, accs.get(key)!, durationMs / 1000),
    };
  }
  return {
    metrics,
    state: { ...input.summaries[0]?.state, testRunDurationMs: durationMs },
    setup_data: input.summaries[0]?.setup_data,
  };
}

/**
 * A run's instance folders (each with k6's summary.json and samples.json.gz) merged into `dir`: summary.json from all
 * their samples (exact percentiles), samples.json.gz when kept, scenario.json and the planned events of instance 0.
 * An instance with no summary, or whose own numbers say the tester failed, makes the run INVALID, named.
 */
export async function mergeInstanceDirs(
  dir: string,
  instanceDirs: string[],
  slos: Slo[],
  keepSamples: boolean,
): Promise<{ summary: SummaryData | null; invalid: string[] }> {
  const invalid: string[] = [];
  const own: SummaryData[] = [];
  instanceDirs.forEach((d, i) => {
    const s = readJson<SummaryData>(join(d, 'summary.json'));
    if (!s) return void invalid.push(`instance ${i} wrote no summary (see ${join(basename(d), 'k6.log')})`);
    for (const why of judge(s, slos).invalid) invalid.push(`instance ${i}: ${why}`);
    own.push(s);
  });
  const missing = instanceDirs.findIndex((d) => !existsSync(join(d, 'samples.json.gz')));
  if (missing >= 0) invalid.push(`instance ${missing} kept no samples (samples.json.gz): its numbers cannot be merged`);
  if (invalid.some((x) => /wrote no summary|kept no samples/.test(x))) return { summary: null, invalid };
  const tmp = join(dir, `.samples-${process.pid}.json.gz`);
  try {
    const summary = await mergeInstances({
      samples: instanceDirs.map((d) => join(d, 'samples.json.gz')),
      summaries: own,
      combinedSamples: keepSamples ? tmp : undefined,
    });
    if (keepSamples) renameSync(tmp, join(dir, 'samples.json.gz'));
    writeResult(join(dir, 'summary.json'), JSON.stringify(summary, null, 1));
    for (const f of ['scenario.json', 'events.json'])
      if (existsSync(join(instanceDirs[0]!, f))) copyFileSync(join(instanceDirs[0]!, f), join(dir, f));
    // What is the whole run's now lives beside the instances: one junit.xml for CI to find, one set of samples.
    for (const d of instanceDirs)
      for (const f of ['samples.json.gz', 'junit.xml', 'events.json', 'scenario.json'])
        rmSync(join(d, f), { force: true });
    return { summary, invalid };
  } catch (e) {
    rmSync(tmp, { force: true });
    invalid.push(`the instances' samples could not be merged: ${fsProblem(e)}`);
    return { summary: null, invalid };
  }
}
