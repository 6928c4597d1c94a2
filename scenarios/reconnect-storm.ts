// Reconnect storm: N devices lose the server at once. How fast does the fleet come back, how high is the herd's
// peak, how many conversations are lost, and how does it differ per backoff policy (-e BACKOFF=fixed:500 vs full-jitter)?
//   k6 run -e TARGET_URL=… -e TOXIPROXY_URL=… -e DEVICES=1000 -e BACKOFF=fixed:1000 scenarios/reconnect-storm.ts
import { makeScenario } from './lib/kit.ts';
import type { SummaryData } from '../core/run-contract.ts';

const BUCKET_MS = 250;

const s = makeScenario({
  name: 'reconnect-storm',
  devices: 500,
  duration: '40s',
  ramp: '5s',
  profile: 'recommended',
  timeline: 'storm-cut',
  wake: { mode: 'poisson', interval_ms: 30_000, first_min_ms: 5000, first_max_ms: 15_000 },
  // Reconnect attempts counted per 250 ms of the run (from the chaos epoch) so the herd's shape is visible.
  wrapMetrics: (sink, _cfg, epoch) => ({
    add(name, value, tags) {
      if (name === 'reconnect_attempts')
        sink.add(name, value, { ...tags, storm_q: String(Math.floor((Date.now() - epoch) / BUCKET_MS)) });
      else sink.add(name, value, tags);
    },
  }),
  extraThresholds: (cfg) =>
    Object.fromEntries(
      Array.from({ length: Math.ceil(cfg.durationMs / BUCKET_MS) + 8 }, (_, i) => [
        `reconnect_attempts{storm_q:${i - 4}}`,
        [],
      ]),
    ),
  report: (data: SummaryData) => herdReport(data),
});

/** The herd: attempts per 250 ms around the cut, its peak (as a rate), and how long it spreads. */
function herdReport(data: SummaryData): string[] {
  const buckets: [number, number][] = [];
  for (const [name, m] of Object.entries(data.metrics)) {
    const q = /^reconnect_attempts\{storm_q:(-?\d+)\}$/.exec(name);
    if (q && (m.values.count ?? 0) > 0) buckets.push([Number(q[1]), m.values.count!]);
  }
  if (!buckets.length) return ['herd: no reconnect attempts'];
  buckets.sort((a, b) => a[0] - b[0]);
  const total = buckets.reduce((a, [, n]) => a + n, 0);
  const [peakQ, peak] = buckets.reduce((a, b) => (b[1] > a[1] ? b : a));
  const spanS = ((buckets[buckets.length - 1]![0] - buckets[0]![0] + 1) * BUCKET_MS) / 1000;
  const t = (q: number) => `t+${((q * BUCKET_MS) / 1000).toFixed(2).padStart(6)}s`;
  const bars = buckets.map(
    ([q, n]) => `    ${t(q)} ${String(n).padStart(6)} ${'#'.repeat(Math.max(1, Math.round((n / peak) * 40)))}`,
  );
  return [
    `herd: ${total} reconnect attempts over ${spanS} s; peak ${peak} in 250 ms (${peak * 4}/s) at ${t(peakQ).trim()}, ${((peak / total) * 100).toFixed(1)}% of all attempts`,
    ...bars,
  ];
}
// k6 reads these from the entry script: options, the lifecycle hooks, and the two scenarios' exec functions.
export const { options, setup, devices, chaos, teardown, handleSummary } = s;
