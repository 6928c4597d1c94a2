// Flaky network: a device's day on bad Wi-Fi — jitter, short cuts (TIMELINE=half-open or cell-handover for others).
//   k6 run -e TARGET_URL=… -e TOXIPROXY_URL=… scenarios/flaky-network.ts
import { makeScenario } from './lib/kit.ts';

const s = makeScenario({
  name: 'flaky-network',
  devices: 120,
  duration: '60s',
  // Both dialects in one fleet: six wakestorm PCM firmwares and xiaozhi-esp32 (a channel per wake, Opus).
  profile:
    'esp32-hotpin:1,react-avatar:1,pi-assistant:1,esp32-p4-screen:1,web-heartbeat:1,recommended:1,xiaozhi-esp32:1',
  timeline: 'flaky-wifi',
  wake: { mode: 'poisson', interval_ms: 15_000, first_min_ms: 0, first_max_ms: 15_000 },
});

// k6 reads these from the entry script: options, the lifecycle hooks, and the two scenarios' exec functions.
export const { options, setup, devices, chaos, teardown, handleSummary } = s;
