// Smoke test: does anything work at all? 20 devices for 30 s, each wakes once, through the proxy.
//   k6 run -e TARGET_URL=ws://127.0.0.1:18000 scenarios/smoke.ts
import { createK6Metrics, fleetScenario, loadUtterance, runFleetVu } from './lib/k6-fleet.ts';
import { readRunConfig } from './lib/run-config.ts';
import { TREND_STATS, summaryOutputs, type SummaryData } from './lib/summary.ts';

const cfg = readRunConfig(
  __ENV,
  { devices: 20, duration: '30s', profile: 'recommended', ramp: '2s', wake: { mode: 'once', interval_ms: 0, first_min_ms: 2000, first_max_ms: 12_000 } },
  (path) => open(path),
);
const metrics = createK6Metrics();
const audio = loadUtterance();

export const options = {
  summaryTrendStats: TREND_STATS,
  scenarios: { devices: fleetScenario(cfg) },
  thresholds: {
    wake_ack_latency: ['p(95)<500'],
    response_latency: ['p(95)<3000'],
    session_drop_rate: ['rate<0.01'],
    sessions_completed: ['count>0'],
    connection_drops: ['count<1'],
    devices_gave_up: ['count<1'],
  },
};

export default function () {
  runFleetVu(cfg, metrics, audio);
}

export function handleSummary(data: SummaryData) {
  return summaryOutputs(data, __ENV, 'smoke');
}
