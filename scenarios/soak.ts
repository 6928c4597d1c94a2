// Soak: hours of steady load (DURATION is the parameter). Latencies in the first and last tenth are compared for drift.
//   k6 run -e TARGET_URL=… -e DEVICES=2000 -e DURATION=4h scenarios/soak.ts
import { makeScenario, timeWindows } from './lib/kit.ts';
import type { SummaryData } from '../core/run-contract.ts';

const DRIFT = ['wake_ack_latency', 'response_latency', 'ping_rtt'] as const;
// Each latency sample is tagged with the tenth of the run it falls in: first, last, or none.
const tenths = timeWindows('window', [...DRIFT], ['first', 'last'], (f) =>
  f < 0.1 ? 'first' : f > 0.9 ? 'last' : null,
);

const s = makeScenario({
  name: 'soak',
  devices: 1000,
  duration: '1h',
  profile: 'recommended:60,esp32-hotpin:40',
  wake: 'poisson:5m',
  wrapMetrics: tenths.wrapMetrics,
  extraThresholds: tenths.extraThresholds,
  report: (data: SummaryData) =>
    DRIFT.map((m) => {
      const a = data.metrics[tenths.key(m, 'first')]?.values['p(95)'];
      const b = data.metrics[tenths.key(m, 'last')]?.values['p(95)'];
      if (a === undefined || b === undefined || !a) return `drift ${m}: not enough samples in the first and last tenth`;
      return `drift ${m}: p95 ${a.toFixed(1)} ms in the first tenth -> ${b.toFixed(1)} ms in the last (${(((b - a) / a) * 100).toFixed(1)}%)`;
    }),
});

// k6 reads these from the entry script: options, the lifecycle hooks, and the two scenarios' exec functions.
export const { options, setup, devices, chaos, teardown, handleSummary } = s;
