// The baseline for `npm run bench`: the straightforward k6 script a user would write from k6's documentation.
// One device per VU, one socket, the same identity and keepalive as the `recommended` profile, no device model.
import { WebSocket } from 'k6/websockets';
import { setInterval, clearInterval, setTimeout } from 'k6/timers';
import exec from 'k6/execution';

const DEVICES = Number(__ENV.DEVICES ?? 100);
const DURATION_S = Number((__ENV.DURATION ?? '60s').replace(/s$/, ''));
// A comma-separated TARGET_URL (Toxiproxy shards for big fleets) is spread over the VUs; nothing else is added.
const TARGETS = (__ENV.TARGET_URL ?? 'ws://127.0.0.1:18000').split(',');

export const options = {
  scenarios: {
    devices: { executor: 'per-vu-iterations', vus: DEVICES, iterations: 1, maxDuration: `${DURATION_S + 30}s` },
  },
};

export default function () {
  const id = `baseline-${exec.vu.idInTest}`;
  const ws = new WebSocket(`${TARGETS[exec.vu.idInTest % TARGETS.length]}/ws/${id}`);
  let pinger: number | undefined;
  ws.onmessage = (e) => {
    const msg = JSON.parse(e!.data as string);
    if (msg.type === 'connected') {
      pinger = setInterval(() => ws.send(JSON.stringify({ type: 'ping', id: Date.now(), t: Date.now() })), 15_000);
    } else if (msg.type === 'ping') {
      ws.send(JSON.stringify({ type: 'pong', t: msg.t }));
    }
  };
  setTimeout(() => {
    if (pinger !== undefined) clearInterval(pinger);
    ws.close();
  }, Math.max(1000, exec.scenario.startTime + DURATION_S * 1000 - Date.now()));
}

export function handleSummary(data: unknown) {
  return __ENV.RESULTS_DIR ? { [`${__ENV.RESULTS_DIR}/summary.json`]: JSON.stringify(data) } : {};
}
