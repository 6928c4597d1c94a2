// `wakestorm run --instances N`: k6 execution segments, each instance with its own engine and Toxiproxy shard, one
// timeline across all of them, and one exact result: the merged percentiles are those of every raw sample.
import assert from 'node:assert/strict';
import { createReadStream, existsSync, mkdtempSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { createGunzip } from 'node:zlib';
import { runCli } from '../helpers/proc.ts';

const results = mkdtempSync(join(tmpdir(), 'wakestorm-instances-'));

interface Point {
  metric: string;
  value: number;
  tags: Record<string, string>;
}

async function points(file: string): Promise<Point[]> {
  const out: Point[] = [];
  const rl = createInterface({ input: createReadStream(file).pipe(createGunzip()), crlfDelay: Infinity });
  for await (const line of rl) {
    const p = JSON.parse(line) as { type: string; metric: string; data: { value: number; tags?: Point['tags'] } };
    if (p.type === 'Point') out.push({ metric: p.metric, value: p.data.value, tags: p.data.tags ?? {} });
  }
  return out;
}

/** The p-th percentile as k6 defines it (lib/metrics TrendSink.P): rank p·(n−1), interpolated. Written afresh here. */
function p(values: number[], q: number): number {
  const s = [...values].sort((a, b) => a - b);
  const rank = q * (s.length - 1);
  const lo = Math.floor(rank);
  return s[lo]! + (s[Math.min(lo + 1, s.length - 1)]! - s[lo]!) * (rank - lo);
}

type Summary = { metrics: Record<string, { values: Record<string, number> }> };
const summaryIn = (dir: string): Summary => JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8')) as Summary;

describe('wakestorm run --instances', () => {
  it('refuses a bad instance count in one line before anything starts', async () => {
    const r = await runCli(['run', 'smoke', '--instances', '0', '--results', results]);
    assert.equal(r.code, 2);
    assert.match(r.stderr.trim(), /^[^\n]*--instances[^\n]*$/);
  });

  it('refuses more instances than devices: each needs a VU of its own', async () => {
    const r = await runCli(['run', 'smoke', '--instances', '4', '--devices', '3', '--results', results]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr.trim(), /^wakestorm: --instances 4 needs a device in each of its 4 k6 processes[^\n]*$/);
  });

  it('two instances: one fleet, one timeline, one exact merged verdict', async () => {
    const tl = join(results, 'cut.json');
    writeFileSync(tl, JSON.stringify([{ at: '8s', for: '3s', fault: 'cut' }]));
    const r = await runCli(
      ['run', 'smoke', '--instances', '2', '--devices', '40', '--duration', '30s', '--timeline', tl],
      { timeoutMs: 180_000, env: { WAKESTORM_RESULTS: results } },
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /2 k6 instances initialised and started together/);
    assert.match(r.stdout, /VERDICT: PASS/);
    const dir = join(results, readlinkSync(join(results, 'latest')));
    const merged = summaryIn(dir);
    const own = [0, 1].map((i) => summaryIn(join(dir, `instance-${i}`)));
    // One junit.xml for CI, the whole run's; each instance keeps its own k6 log and summary.
    for (const i of [0, 1]) {
      assert.ok(existsSync(join(dir, `instance-${i}`, 'k6.log')));
      assert.ok(!existsSync(join(dir, `instance-${i}`, 'junit.xml')));
    }
    assert.match(readFileSync(join(dir, 'junit.xml'), 'utf8'), /failures="0" errors="0"/);
    // k6 gave each segment part of the fleet, and the ids stayed unique: the server never replaced a link (4409).
    const started = own.map((s) => s.metrics.devices_started!.values.count!);
    assert.ok(
      started.every((n) => n > 0),
      `devices per instance ${started}`,
    );
    assert.equal(merged.metrics.devices_started!.values.count, 40);
    assert.doesNotMatch(readFileSync(join(dir, 'server-metrics.txt'), 'utf8'), /code="4409"/);
    // The timeline ran once, in one segment, on every shard: every device of both instances lost its link in the
    // window, none counted as an unplanned drop, and each onset and end was applied once.
    const events = JSON.parse(readFileSync(join(dir, 'events.json'), 'utf8')) as { planned: []; applied: [] };
    assert.equal(events.planned.length, 2);
    assert.equal(events.applied.length, 2);
    assert.deepEqual(
      own.map((s) => s.metrics.connection_drops!.values.count),
      started,
      'every device of each instance was cut',
    );
    assert.equal(merged.metrics.connection_drops!.values.count, 40);
    assert.equal(merged.metrics.unplanned_drops!.values.count, 0);

    // Exactness, against every raw sample of both instances (the combined samples.json.gz, tagged by instance).
    const all = await points(join(dir, 'samples.json.gz'));
    for (const metric of ['response_latency', 'wake_ack_latency', 'reconnect_time', 'ping_rtt']) {
      const values = all.filter((x) => x.metric === metric);
      assert.ok(values.length > 10, `${metric}: ${values.length} samples`);
      const m = merged.metrics[metric]!.values;
      assert.equal(m.count, values.length, metric);
      assert.equal(m.count, own[0]!.metrics[metric]!.values.count! + own[1]!.metrics[metric]!.values.count!);
      for (const q of [0.5, 0.95, 0.99]) {
        const key = `p(${q * 100})`;
        const want = p(
          values.map((x) => x.value),
          q,
        );
        assert.ok(Math.abs(m[key]! - want) < 1e-9, `${metric} ${key}: merged ${m[key]} vs all samples ${want}`);
        // The same rule on one instance's samples gives k6's own number for that instance.
        for (const i of [0, 1]) {
          const mine = values.filter((x) => x.tags.instance === String(i)).map((x) => x.value);
          const k6s = own[i]!.metrics[metric]!.values[key]!;
          assert.ok(Math.abs(p(mine, q) - k6s) < 1e-6, `${metric} ${key} instance ${i}: ${p(mine, q)} vs k6 ${k6s}`);
        }
      }
    }
    // Rates sum their passes and fails; a merged percentile is not the average of the instances'.
    const cs = merged.metrics.connect_success!.values;
    assert.equal(
      cs.passes,
      own[0]!.metrics.connect_success!.values.passes! + own[1]!.metrics.connect_success!.values.passes!,
    );
    const run = JSON.parse(readFileSync(join(dir, 'run.json'), 'utf8')) as { verdict: string; processes: object };
    assert.equal(run.verdict, 'pass');
  });
});
