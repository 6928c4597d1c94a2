// The plain k6 device both reference rows run (bench/baseline.ts one per VU, bench/floor.ts many per VU): one socket
// with the `recommended` profile's identity and keepalive, straight from k6's WebSocket docs, and nothing else.
import { WebSocket } from 'k6/websockets';
import { setInterval, clearInterval, setTimeout } from 'k6/timers';

/** Opens `url`, pings every 15 s once connected, answers the server's pings, and closes at `endAt`. */
export function plainSocket(url: string, endAt: number, params: { tags?: Record<string, string> } = {}): void {
  const ws = new WebSocket(url, null, params);
  let pinger: number | undefined;
  ws.onmessage = (e) => {
    const msg = JSON.parse(e!.data as string);
    if (msg.type === 'connected') {
      pinger = setInterval(() => ws.send(JSON.stringify({ type: 'ping', id: Date.now(), t: Date.now() })), 15_000);
    } else if (msg.type === 'ping') {
      ws.send(JSON.stringify({ type: 'pong', t: msg.t }));
    }
  };
  setTimeout(
    () => {
      if (pinger !== undefined) clearInterval(pinger);
      ws.close();
    },
    Math.max(1000, endAt - Date.now()),
  );
}
