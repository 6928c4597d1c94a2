// The k6 floor for the scale bench: many sockets per VU (as wakestorm runs them), each with the same identity and
// keepalive as the `recommended` profile, and nothing else: no device model, no audio, no reconnects, no metrics of
// our own. What a wakestorm device costs above this row is the device model's own price; this row itself is what
// k6/websockets charges for a socket, which no script can go below.
import { setTimeout } from 'k6/timers';
import { plainSocket } from './plain-socket.ts';
import exec from 'k6/execution';
import { parseDuration } from '../../core/duration.ts';

const DEVICES = Number(__ENV.DEVICES ?? 100);
const PER_VU = Number(__ENV.DEVICES_PER_VU ?? 200);
// The run contract's one duration grammar ("2m", "90s", "1h30m"), not a grammar of its own.
const DURATION_S = parseDuration(__ENV.DURATION ?? '60s', 'DURATION') / 1000;
const RAMP_S = parseDuration(__ENV.RAMP ?? '10s', 'RAMP') / 1000;
const TARGETS = (__ENV.TARGET_URL ?? 'ws://127.0.0.1:18000').split(',');
const VUS = Math.ceil(DEVICES / PER_VU);

/** One name tag per target, as the fleet does, so the floor is not inflated by a time series per device. */
function device(i: number, endAt: number): void {
  const target = TARGETS[i % TARGETS.length];
  plainSocket(`${target}/ws/floor-${i}`, endAt, { tags: { name: `${target}/ws/{id}` } });
}

export const options = {
  scenarios: {
    devices: { executor: 'per-vu-iterations', vus: VUS, iterations: 1, maxDuration: `${DURATION_S + 30}s` },
  },
};

export default function () {
  const vu = exec.scenario.iterationInTest;
  const first = vu * PER_VU;
  const last = Math.min(DEVICES, first + PER_VU);
  const start = exec.scenario.startTime;
  const endAt = start + DURATION_S * 1000;
  // Connects spread over the ramp by global index, like the fleet.
  for (let i = first; i < last; i++)
    setTimeout(() => device(i, endAt), Math.max(0, (i / DEVICES) * RAMP_S * 1000 - (Date.now() - start)));
}

export function handleSummary(data: unknown) {
  return __ENV.RESULTS_DIR ? { [`${__ENV.RESULTS_DIR}/summary.json`]: JSON.stringify(data) } : {};
}
