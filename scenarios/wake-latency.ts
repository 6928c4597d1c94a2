// Wake latency at steady load: how long does a user wait after the wake word? Poisson wakes, a realistic profile mix.
//   k6 run -e TARGET_URL=ws://127.0.0.1:18000 -e DEVICES=500 -e DURATION=2m scenarios/wake-latency.ts
import { makeScenario } from './lib/kit.ts';

const s = makeScenario({
  name: 'wake-latency',
  devices: 200,
  duration: '60s',
  profile: 'recommended:50,esp32-hotpin:25,react-avatar:25',
  wake: { mode: 'poisson', interval_ms: 20_000, first_min_ms: 0, first_max_ms: 20_000 },
});

// k6 reads these from the entry script: options, the lifecycle hooks, and the two scenarios' exec functions.
export const { options, setup, devices, chaos, teardown, handleSummary } = s;
