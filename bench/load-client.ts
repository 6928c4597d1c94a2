// The server bench's load process: N idle devices that answer keepalives, and M voice-session slots streaming real-time audio.
// Driven by its parent over IPC; bounded by the parent's commands and a hard deadline.
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';

const UTT = readFileSync(new URL('../audio/utterance.pcm', import.meta.url));
const FRAME = 640; // 20 ms
const SILENCE = Buffer.alloc(FRAME);
const base = process.env.TARGET!;
const idle: WebSocket[] = [];
const slots: { stop: () => void }[] = [];
let stats = { completed: 0, errors: 0, ttsBytes: 0 };

function openDevice(id: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${base}/ws/${id}`, { perMessageDeflate: false });
    ws.on('message', (d, bin) => {
      if (bin) return;
      const m = JSON.parse(d.toString());
      if (m.type === 'connected') resolve(ws);
      else if (m.type === 'ping') ws.send(JSON.stringify({ type: 'pong', t: m.t }));
    });
    ws.on('error', reject);
  });
}

/** One slot: wake, stream the utterance at real time, end speech, take the reply, confirm playback, again. */
async function voiceSlot(i: number): Promise<{ stop: () => void }> {
  const ws = await openDevice(`bench-voice-${i}`);
  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  let sid = '';
  const wake = () => {
    if (stopped) return;
    ws.send(JSON.stringify({ type: 'hotword_detected', wake_id: `w-${i}-${Date.now()}` }));
  };
  ws.on('message', (d, bin) => {
    if (bin) {
      stats.ttsBytes += (d as Buffer).length;
      return;
    }
    const m = JSON.parse(d.toString());
    if (m.type === 'session_started') {
      sid = m.session_id;
      const t0 = performance.now();
      let k = 0;
      const total = Math.floor(UTT.length / FRAME);
      const step = () => {
        if (stopped) return;
        if (k < total) ws.send(UTT.subarray(k * FRAME, (k + 1) * FRAME));
        else return ws.send(JSON.stringify({ type: 'end_of_speech', session_id: sid }));
        k++;
        timer = setTimeout(step, Math.max(0, t0 + k * 20 - performance.now()));
      };
      step();
    } else if (m.type === 'tts_stream_end') {
      ws.send(JSON.stringify({ type: 'playback_complete', session_id: sid }));
    } else if (m.type === 'session_end') {
      if (m.reason === 'complete') stats.completed++;
      else stats.errors++;
      setTimeout(wake, 50);
    } else if (m.type === 'error') stats.errors++;
  });
  // Spread slot starts over a second so their frames interleave.
  setTimeout(wake, (i * 37) % 1000);
  void SILENCE;
  return {
    stop: () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      ws.terminate();
    },
  };
}

process.on('message', async (msg: { cmd: string; n?: number }) => {
  try {
    if (msg.cmd === 'idle') {
      const want = msg.n!;
      for (let start = idle.length; start < want; start += 500) {
        const batch = [];
        for (let i = start; i < Math.min(want, start + 500); i++) batch.push(openDevice(`bench-idle-${i}`));
        idle.push(...(await Promise.all(batch)));
      }
      process.send!({ ok: true, idle: idle.length });
    } else if (msg.cmd === 'voice') {
      for (const s of slots.splice(0)) s.stop();
      stats = { completed: 0, errors: 0, ttsBytes: 0 };
      for (let i = 0; i < msg.n!; i += 50) slots.push(...(await Promise.all(Array.from({ length: Math.min(50, msg.n! - i) }, (_, j) => voiceSlot(i + j)))));
      process.send!({ ok: true, slots: slots.length });
    } else if (msg.cmd === 'stats') {
      process.send!({ ok: true, ...stats });
    } else if (msg.cmd === 'stop') {
      for (const s of slots.splice(0)) s.stop();
      for (const ws of idle.splice(0)) ws.terminate();
      process.send!({ ok: true });
      setTimeout(() => process.exit(0), 100);
    }
  } catch (e) {
    process.send!({ ok: false, error: String(e) });
  }
});
// Never outlive the bench.
setTimeout(() => process.exit(3), 15 * 60_000).unref();
