// Slow readers against the reference server: N clients that never read ask for TTS reply after reply for a while;
// prints the server's total send queue (Node's bufferedAmount + the kernel's Send-Q from `ss -tm`), how many were cut,
// and whether a well-behaved device on another connection completed every session meanwhile. Loopback, bounded.
//   npm run bench:slow-readers            (SLOW_N=2000 SLOW_S=180 by default)
//   SLOW_GUARD=off npm run bench:slow-readers   (the read-progress guard off: what Node's buffer check alone does)
import { startVoiceServer } from '../server/server.ts';
import { connectDevice, type ProtocolClient } from '../scripts/protocol-client.ts';
import { serverSendQueues, tcpMemPages } from '../scripts/proc-stats.ts';

const N = Number(process.env.SLOW_N ?? 2000);
const SECONDS = Number(process.env.SLOW_S ?? 180);
const guard = process.env.SLOW_GUARD !== 'off';
/** Each slow client asks for a new reply this often. */
const ROUND_MS = Number(process.env.SLOW_ROUND_MS ?? 3000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const server = await startVoiceServer({
  port: 0,
  sttMs: 0,
  llmMs: 0,
  ttsMs: 0,
  ttsPace: 'realtime',
  maxUnackedBytes: guard ? undefined : 1 << 30,
  maxConnections: N + 100,
  maxPendingUpgrades: N + 100,
  audioBurstBytes: 1 << 30,
  audioRateBytesPerS: 1 << 30,
});
const slow: ProtocolClient[] = [];
for (let i = 0; i < N; i++) {
  const { c } = await connectDevice(server.wsUrl, `slow-${i}`);
  // Stops reading: the kernel receive buffer fills, then the server's send queue would grow.
  (c.ws as unknown as { _socket: { pause(): void } })._socket.pause();
  slow.push(c);
}
const { c: good } = await connectDevice(server.wsUrl, 'good');
const t0 = Date.now();
const end = t0 + SECONDS * 1000;
let completed = 0;
let failed = 0;
const talk = (async () => {
  while (Date.now() < end) {
    try {
      if ((await good.conversation(`g-${completed + failed}`)) === 'complete') completed++;
      else failed++;
    } catch {
      failed++;
    }
  }
})();
let peakTotal = 0;
let peakPerSocket = 0;
let peakTcpPages = 0;
const tcpBefore = tcpMemPages();
for (let round = 0; Date.now() < end; round++) {
  for (const c of slow) {
    if (c.closeCode !== null) continue;
    c.send({ type: 'hotword_detected', wake_id: `w-${round}` });
    c.ws.send(Buffer.alloc(16384, 1));
    c.ws.send(Buffer.alloc(16384, 1));
  }
  await sleep(ROUND_MS);
  const q = serverSendQueues(server.port);
  peakTotal = Math.max(
    peakTotal,
    q.reduce((a, b) => a + b, 0),
  );
  peakPerSocket = Math.max(peakPerSocket, ...q, 0);
  peakTcpPages = Math.max(peakTcpPages, tcpMemPages());
}
await talk;
const metrics = await (await fetch(`${server.httpUrl}/metrics`)).text();
const cut = Number(/voice_slow_readers_cut_total (\d+)/.exec(metrics)?.[1] ?? 0);
console.log(
  `slow readers (${guard ? 'read-progress guard on' : 'guard off: Node buffer check only'}): ${N} clients for ${SECONDS} s: ${cut} cut; ` +
    `server kernel send queue peak ${(peakTotal / 2 ** 20).toFixed(1)} MiB in total, ${(peakPerSocket / 1024).toFixed(0)} KiB on the worst socket; ` +
    `host TCP memory ${((tcpBefore * 4096) / 2 ** 20).toFixed(0)} -> peak ${((peakTcpPages * 4096) / 2 ** 20).toFixed(0)} MiB; ` +
    `good device: ${completed} sessions complete, ${failed} not`,
);
for (const c of slow) c.close();
good.close();
await server.close();
process.exit(0);
