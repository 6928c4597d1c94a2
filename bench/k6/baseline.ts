// The baseline for `npm run bench`: the straightforward k6 script a user would write from k6's documentation.
// One device per VU, one socket, the same identity and keepalive as the `recommended` profile, no device model.
import exec from 'k6/execution';
import { plainSocket } from './plain-socket.ts';
import { parseDuration } from '../../core/duration.ts';

const DEVICES = Number(__ENV.DEVICES ?? 100);
// The run contract's one duration grammar ("2m", "90s", "1h30m"), not a grammar of its own.
const DURATION_S = parseDuration(__ENV.DURATION ?? '60s', 'DURATION') / 1000;
// A comma-separated TARGET_URL (Toxiproxy shards for big fleets) is spread over the VUs; nothing else is added.
const TARGETS = (__ENV.TARGET_URL ?? 'ws://127.0.0.1:18000').split(',');

export const options = {
  scenarios: {
    devices: { executor: 'per-vu-iterations', vus: DEVICES, iterations: 1, maxDuration: `${DURATION_S + 30}s` },
  },
};

export default function () {
  const id = `baseline-${exec.vu.idInTest}`;
  plainSocket(`${TARGETS[exec.vu.idInTest % TARGETS.length]}/ws/${id}`, exec.scenario.startTime + DURATION_S * 1000);
}

export function handleSummary(data: unknown) {
  return __ENV.RESULTS_DIR ? { [`${__ENV.RESULTS_DIR}/summary.json`]: JSON.stringify(data) } : {};
}
