// Breakpoint: devices ramp up over DURATION until an SLO breaks; the run aborts at the first breach (abortOnFail).
// For the stepped search with a verdict, use `wakestorm capacity`.
//   k6 run -e TARGET_URL=… -e DEVICES=20000 -e DURATION=10m scenarios/capacity.ts
import { makeScenario } from './lib/kit.ts';
import { DEFAULT_SLOS } from '../core/slo.ts';
import type { SummaryData } from '../core/run-contract.ts';

const s = makeScenario({
  name: 'capacity',
  devices: 2000,
  duration: '3m',
  profile: 'recommended',
  wake: { mode: 'poisson', interval_ms: 60_000, first_min_ms: 0, first_max_ms: 60_000 },
  slos: DEFAULT_SLOS.map((x) => ({ ...x, abortOnFail: true })),
  // One VU per DEVICES_PER_VU devices, started over 90% of the run: the fleet grows until it breaks.
  devicesScenario: (cfg) => ({
    executor: 'ramping-vus',
    startVUs: 1,
    stages: [
      { duration: `${Math.round((cfg.durationMs * 0.9) / 1000)}s`, target: cfg.vus },
      { duration: `${Math.round((cfg.durationMs * 0.1) / 1000)}s`, target: cfg.vus },
    ],
    gracefulRampDown: '5s',
  }),
  rampFraction: 0.9,
  report: (data: SummaryData) => [
    `devices started before the end or the first breach: ${data.metrics.devices_started?.values.count ?? 0}`,
  ],
});

// k6 reads these from the entry script: options, the lifecycle hooks, and the two scenarios' exec functions.
export const { options, setup, devices, chaos, teardown, handleSummary } = s;
