// The report's connected chart for every fleet shape (issue 38): each VU reports its connected devices per profile,
// some VUs holding one profile and others several; the chart's total is their sum at each second, each profile's line
// its own sum, and no second has two totals.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { test } from 'node:test';
import { runSeries } from '../../scripts/charts.ts';
import { toCsv } from '../../scripts/run-dir.ts';
import { readServerSample } from '../../scripts/server-watch.ts';

const T0 = Date.parse('2026-12-06T07:00:00Z');

function point(second: number, value: number, tags: Record<string, string>): string {
  const time = new Date(T0 + second * 1000 + 100).toISOString();
  return JSON.stringify({ type: 'Point', metric: 'devices_connected', data: { time, value, tags } });
}

test('a mixed fleet: VUs of one profile and VUs of several sum to one total per second', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'wakestorm-series-'));
  const lines: string[] = [];
  for (let s = 0; s < 5; s++) {
    // VU 1 holds only esp32 (71 connected), VU 2 holds esp32 and pi, VU 3 only pi; one VU misses second 2.
    lines.push(point(s, 71, { vu: '1', profile: 'esp32' }));
    lines.push(point(s, 10, { vu: '2', profile: 'esp32' }), point(s, 20, { vu: '2', profile: 'pi' }));
    if (s !== 2) lines.push(point(s, 50, { vu: '3', profile: 'pi' }));
  }
  writeFileSync(join(dir, 'samples.json.gz'), gzipSync(`${lines.join('\n')}\n`));
  const rs = (await runSeries(dir))!;
  const at = (key: string) => rs.connected.filter((r) => r.key === key).map((r) => r.value);
  // A missed second carries the VU's last value: the total never dips because a sample came late.
  assert.deepEqual(at('all devices'), [151, 151, 151, 151, 151]);
  assert.deepEqual(at('esp32'), [81, 81, 81, 81, 81]);
  assert.deepEqual(at('pi'), [70, 70, 70, 70, 70]);
  const seconds = rs.connected.filter((r) => r.key === 'all devices').map((r) => r.s);
  assert.equal(new Set(seconds).size, seconds.length, 'one total per second');
});

test('a fleet of one profile draws the total only', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'wakestorm-series-'));
  const lines = [0, 1, 2].flatMap((s) => [
    point(s, 40, { vu: '1', profile: 'r' }),
    point(s, 2, { vu: '2', profile: 'r' }),
  ]);
  writeFileSync(join(dir, 'samples.json.gz'), gzipSync(`${lines.join('\n')}\n`));
  const rs = (await runSeries(dir))!;
  assert.deepEqual(
    rs.connected.map((r) => [r.key, r.value]),
    [
      ['all devices', 42],
      ['all devices', 42],
      ['all devices', 42],
    ],
  );
});

test('a run from before every series was tagged: untagged VUs count in the total, once per second', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'wakestorm-series-'));
  const lines = [0, 1, 2].flatMap((s) => [
    point(s, 71, { vu: '1' }),
    point(s, 10, { vu: '2', profile: 'esp32' }),
    point(s, 20, { vu: '2', profile: 'pi' }),
  ]);
  writeFileSync(join(dir, 'samples.json.gz'), gzipSync(`${lines.join('\n')}\n`));
  const rs = (await runSeries(dir))!;
  assert.deepEqual(
    rs.connected.filter((r) => r.key === 'all devices').map((r) => r.value),
    [101, 101, 101],
  );
});

test("second 0 is the timeline's zero: fault windows sit where the recovery table says, samples before it at -1", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'wakestorm-series-'));
  const lines = [0, 1, 2, 3, 4, 5].map((s) => point(s, 10, { vu: '1', profile: 'r' }));
  writeFileSync(join(dir, 'samples.json.gz'), gzipSync(`${lines.join('\n')}\n`));
  // The devices started 750 ms before the timeline's zero (setup's epoch), as k6 runs them; a cut at 2-3 s.
  const epoch = T0 + 750;
  writeFileSync(join(dir, 'run.json'), JSON.stringify({ resolved: { epoch_ms: epoch } }));
  const cut = (phase: string, at: number) => ({ index: 0, fault: 'cut', phase, t: epoch + at });
  writeFileSync(join(dir, 'events.json'), JSON.stringify({ planned: [cut('onset', 2000), cut('end', 3000)] }));
  const rs = (await runSeries(dir))!;
  assert.deepEqual(
    rs.windows.map((w) => [w.from, w.to]),
    [[2, 3]],
  );
  assert.equal(rs.startS, -1);
  assert.equal(rs.zeroIso, new Date(epoch).toISOString());
  // The first sample (T0 + 100 ms) is 0.65 s before the zero: its second is -1.
  assert.equal(rs.connected[0]!.s, -1);
});

test('chart rows as CSV: a header of every field, quoted where needed', () => {
  assert.equal(
    toCsv([
      { s: 1, key: 'all devices', value: 3 },
      { s: 2, key: 'a,"b"', value: 4, extra: true },
    ]),
    's,key,value,extra\n1,all devices,3,\n2,"a,""b""",4,true\n',
  );
});

// The server's own view (scripts/server-watch.ts): what the standard Prometheus clients expose, read as a Go server
// writes it (exponents) and as a Node one with prom-client's default lag gauge; the CPU a rate between two reads.
test("a server's /metrics read into CPU %, MiB, lag ms and connections; missing metrics are null", () => {
  const go = (cpu: number) =>
    `# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total ${cpu}\n` +
    `process_resident_memory_bytes 1.048576e+07\ngo_goroutines 12\n`;
  const first = readServerSample(go(10), T0, null);
  assert.equal(first.sample.cpu_pct, null, 'no rate from one read');
  const second = readServerSample(go(10.5), T0 + 2000, { t: T0, cpuSeconds: first.cpuSeconds });
  assert.deepEqual(second.sample, { t: T0 + 2000, cpu_pct: 25, rss_mib: 10, loop_lag_ms: null, connections: null });
  const node = 'nodejs_eventloop_lag_p99_seconds 0.0125\nvoice_connections 42\n';
  assert.deepEqual(readServerSample(node, T0, null).sample, {
    t: T0,
    cpu_pct: null,
    rss_mib: null,
    loop_lag_ms: 12.5,
    connections: 42,
  });
  // The reference server's own per-read gauge wins over prom-client's.
  const both = `voice_event_loop_lag_p99_seconds 0.002\n${node}`;
  assert.equal(readServerSample(both, T0, null).sample.loop_lag_ms, 2);
});
