// Smoke: does anything work at all? 20 devices for 30 s, each wakes once, default SLOs.
//   k6 run -e TARGET_URL=ws://127.0.0.1:18000 scenarios/smoke.ts
import { makeScenario } from './lib/kit.ts';

const s = makeScenario({
  name: 'smoke',
  devices: 20,
  duration: '30s',
  ramp: '2s',
  profile: 'recommended',
  wake: { mode: 'once', interval_ms: 0, first_min_ms: 2000, first_max_ms: 12_000 },
});

// k6 reads these from the entry script: options, the lifecycle hooks, and the two scenarios' exec functions.
export const { options, setup, devices, chaos, teardown, handleSummary } = s;
