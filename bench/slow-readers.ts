// Slow readers against the reference server: N clients that never read ask for TTS reply after reply for a while;
// prints the server's total send queue (Node's bufferedAmount + the kernel's Send-Q from `ss -tm`), how many were cut,
// and whether a well-behaved device on another connection completed every session meanwhile. Loopback, bounded.
//   npm run bench:slow-readers            (SLOW_N=2000 SLOW_S=180 by default)
//   SLOW_GUARD=off npm run bench:slow-readers   (the read-progress guard off: what Node's buffer check alone does)
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { startVoiceServer } from '../server/server.ts';

const N = Number(process.env.SLOW_N ?? 2000);
const SECONDS = Number(process.env.SLOW_S ?? 180);
const guard = process.env.SLOW_GUARD !== 'off';
/** Each slow client asks for a new reply this often. */
const ROUND_MS = Number(process.env.SLOW_ROUND_MS ?? 3000);
const UTTERANCE = readFileSync(new URL('../audio/utterance.pcm', import.meta.url));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function sendQueues(port: number): number[] {
  const out = execFileSync('ss', ['-tnH', 'state', 'established', `( sport = :${port} )`], { encoding: 'utf8', maxBuffer: 64 << 20 });
  return out.split('\n').filter(Boolean).map((l) => Number(l.trim().split(/\s+/)[1]));
}

function tcpMemPages(): number {
  const line = readFileSync('/proc/net/sockstat', 'utf8').split('\n').find((l) => l.startsWith('TCP:'));
  return Number(/mem (\d+)/.exec(line ?? '')?.[1] ?? 0);
}

function open(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

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
const slow: WebSocket[] = [];
for (let i = 0; i < N; i++) {
  const ws = await open(`${server.wsUrl}/ws/slow-${i}`);
  ws.on('error', () => {});
  (ws as unknown as { _socket: { pause(): void } })._socket.pause();
  slow.push(ws);
}
const good = await open(`${server.wsUrl}/ws/good`);
const pending: ((m: { type: string; session_id?: string; reason?: string }) => void)[] = [];
good.on('message', (d, bin) => {
  if (bin) return;
  const m = JSON.parse(d.toString());
  for (const f of pending.splice(0)) f(m);
});
const next = (type: string, timeoutMs: number) =>
  new Promise<{ type: string; session_id?: string; reason?: string }>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no ${type} in ${timeoutMs} ms`)), timeoutMs);
    const wait = (m: { type: string; session_id?: string; reason?: string }) => {
      if (m.type === type) {
        clearTimeout(t);
        resolve(m);
      } else pending.push(wait);
    };
    pending.push(wait);
  });

const t0 = Date.now();
const end = t0 + SECONDS * 1000;
let completed = 0;
let failed = 0;
const talk = (async () => {
  while (Date.now() < end) {
    try {
      good.send(JSON.stringify({ type: 'hotword_detected', wake_id: `g-${completed + failed}` }));
      const st = await next('session_started', 5000);
      for (let i = 0; i + 640 <= UTTERANCE.length; i += 640) good.send(UTTERANCE.subarray(i, i + 640));
      good.send(JSON.stringify({ type: 'end_of_speech', session_id: st.session_id }));
      await next('tts_stream_end', 15_000);
      good.send(JSON.stringify({ type: 'playback_complete', session_id: st.session_id }));
      const e = await next('session_end', 5000);
      if (e.reason === 'complete') completed++;
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
  for (const ws of slow) {
    if (ws.readyState !== WebSocket.OPEN) continue;
    ws.send(JSON.stringify({ type: 'hotword_detected', wake_id: `w-${round}` }));
    ws.send(Buffer.alloc(16384, 1));
    ws.send(Buffer.alloc(16384, 1));
  }
  await sleep(ROUND_MS);
  const q = sendQueues(server.port);
  peakTotal = Math.max(peakTotal, q.reduce((a, b) => a + b, 0));
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
for (const ws of slow) ws.terminate();
good.terminate();
await server.close();
process.exit(0);
