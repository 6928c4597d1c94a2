// Soak: hours of steady load (DURATION is the parameter). Latencies in the first and last tenth are compared for drift.
//   k6 run -e TARGET_URL=… -e DEVICES=2000 -e DURATION=4h scenarios/soak.ts
import { makeScenario } from './lib/kit.ts';
import type { SummaryData } from './lib/summary.ts';

const DRIFT = ['wake_ack_latency', 'response_latency', 'ping_rtt'];

const s = makeScenario({
  name: 'soak',
  devices: 1000,
  duration: '1h',
  profile: 'recommended:60,esp32-hotpin:40',
  wake: { mode: 'poisson', interval_ms: 300_000, first_min_ms: 0, first_max_ms: 300_000 },
  // Each latency sample is tagged with the tenth of the run it falls in: first, last, or mid.
  wrapMetrics: (sink, cfg, epoch) => ({
    add(name, value, tags) {
      if (!DRIFT.includes(name)) return sink.add(name, value, tags);
      const f = (Date.now() - epoch) / cfg.durationMs;
      sink.add(name, value, { ...tags, window: f < 0.1 ? 'first' : f > 0.9 ? 'last' : 'mid' });
    },
  }),
  extraThresholds: () => Object.fromEntries(DRIFT.flatMap((m) => [[`${m}{window:first}`, []], [`${m}{window:last}`, []]])),
  report: (data: SummaryData) =>
    DRIFT.map((m) => {
      const a = data.metrics[`${m}{window:first}`]?.values['p(95)'];
      const b = data.metrics[`${m}{window:last}`]?.values['p(95)'];
      if (a === undefined || b === undefined || !a) return `drift ${m}: not enough samples in the first and last tenth`;
      return `drift ${m}: p95 ${a.toFixed(1)} ms in the first tenth -> ${b.toFixed(1)} ms in the last (${(((b - a) / a) * 100).toFixed(1)}%)`;
    }),
});

// k6 reads these from the entry script: options, the lifecycle hooks, and the two scenarios' exec functions.
export const { options, setup, devices, chaos, teardown, handleSummary } = s;
