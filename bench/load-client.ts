// The server bench's load process: N idle devices that answer keepalives, and M voice-session slots streaming real-time audio.
// Driven by its parent over IPC; bounded by the parent's commands and a hard deadline.
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { opusClip, type OpusTable } from '../core/opus.ts';
import { connectDevice, type ProtocolClient } from '../scripts/protocol-client.ts';

const base = process.env.TARGET!;
const idle: ProtocolClient[] = [];
const slots: { stop: () => void; client: { binaryBytes: number } }[] = [];
const opusBytes = readFileSync(new URL('../audio/utterance.opus', import.meta.url));
const UTTERANCE_OPUS = opusClip(
  opusBytes.buffer.slice(opusBytes.byteOffset, opusBytes.byteOffset + opusBytes.byteLength),
  JSON.parse(readFileSync(new URL('../audio/utterance.opus.json', import.meta.url), 'utf8')) as OpusTable,
);

/**
 * One xiaozhi slot, as the firmware talks: open a channel, hello, listen start (auto), the utterance as 60 ms Opus
 * packets in real time then silence until the server's VAD answers, the reply to its tts stop, close; again.
 */
function xiaozhiSlot(i: number): { stop: () => void; client: { binaryBytes: number } } {
  const counter = { binaryBytes: 0 };
  let stopped = false;
  let ws: WebSocket | null = null;
  let timer: NodeJS.Timeout | null = null;
  const one = (n: number) => {
    if (stopped) return;
    const sock = new WebSocket(`${base}/xiaozhi/v1/`, {
      perMessageDeflate: false,
      headers: {
        'Device-Id': `02:00:00:00:${(i >> 8) & 255}:${i & 255}`,
        'Protocol-Version': '1',
        'Client-Id': `bench-${i}`,
      },
    });
    ws = sock;
    let k = 0;
    const again = (ok: boolean) => {
      if (timer) clearTimeout(timer);
      sock.removeAllListeners();
      sock.on('error', () => {});
      sock.close();
      if (ok) stats.completed++;
      else stats.errors++;
      if (!stopped) setTimeout(() => one(n + 1), 50);
    };
    sock.on('open', () =>
      sock.send(
        JSON.stringify({
          type: 'hello',
          version: 1,
          transport: 'websocket',
          audio_params: { format: 'opus', sample_rate: 16000, channels: 1, frame_duration: 60 },
        }),
      ),
    );
    sock.on('message', (d, bin) => {
      if (bin) {
        counter.binaryBytes += (d as Buffer).length;
        return;
      }
      const m = JSON.parse(String(d)) as { type: string; state?: string; session_id?: string };
      if (m.type === 'hello') {
        sock.send(JSON.stringify({ session_id: m.session_id, type: 'listen', state: 'start', mode: 'auto' }));
        const t0 = performance.now();
        const step = () => {
          if (stopped || sock.readyState !== sock.OPEN || k > UTTERANCE_OPUS.packets.length + 40) return;
          sock.send(k < UTTERANCE_OPUS.packets.length ? UTTERANCE_OPUS.packets[k]! : UTTERANCE_OPUS.silence);
          k++;
          timer = setTimeout(step, Math.max(0, t0 + k * 60 - performance.now()));
        };
        step();
      } else if (m.type === 'stt' && timer) clearTimeout(timer);
      else if (m.type === 'tts' && m.state === 'stop') again(true);
    });
    sock.on('close', () => again(false));
    sock.on('error', () => {});
  };
  // Spread slot starts over a second so their frames interleave.
  setTimeout(() => one(0), (i * 37) % 1000);
  return {
    client: counter,
    stop: () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      ws?.terminate();
    },
  };
}
let stats = { completed: 0, errors: 0 };

/** A device that answers the server's keepalive pings and waits for `connected`. */
async function openDevice(id: string): Promise<ProtocolClient> {
  return (await connectDevice(base, id, '', { perMessageDeflate: false, answerPings: true })).c;
}

/** One slot: wake, stream the utterance at real time, end speech, take the reply, confirm playback, again. */
async function voiceSlot(i: number): Promise<{ stop: () => void; client: ProtocolClient }> {
  const c = await openDevice(`bench-voice-${i}`);
  let stopped = false;
  const loop = async () => {
    // Spread slot starts over a second so their frames interleave.
    await new Promise((r) => setTimeout(r, (i * 37) % 1000));
    for (let n = 0; !stopped; n++) {
      try {
        if ((await c.conversation(`w-${i}-${n}`, { realtime: true, stop: () => stopped })) === 'complete')
          stats.completed++;
        else stats.errors++;
      } catch {
        if (!stopped) stats.errors++;
      }
      c.messages.length = 0;
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  void loop();
  return {
    client: c,
    stop: () => {
      stopped = true;
      c.close();
    },
  };
}

process.on('message', (msg: { cmd: string; n?: number }) => void command(msg));

async function command(msg: { cmd: string; n?: number }): Promise<void> {
  try {
    if (msg.cmd === 'idle') {
      const want = msg.n!;
      for (let start = idle.length; start < want; start += 500) {
        const batch = [];
        for (let i = start; i < Math.min(want, start + 500); i++) batch.push(openDevice(`bench-idle-${i}`));
        idle.push(...(await Promise.all(batch)));
      }
      process.send!({ ok: true, idle: idle.length });
    } else if (msg.cmd === 'xiaozhi') {
      for (const s of slots.splice(0)) s.stop();
      stats = { completed: 0, errors: 0 };
      for (let i = 0; i < msg.n!; i++) slots.push(xiaozhiSlot(i));
      process.send!({ ok: true, slots: slots.length });
    } else if (msg.cmd === 'voice') {
      for (const s of slots.splice(0)) s.stop();
      stats = { completed: 0, errors: 0 };
      for (let i = 0; i < msg.n!; i += 50)
        slots.push(
          ...(await Promise.all(Array.from({ length: Math.min(50, msg.n! - i) }, (_, j) => voiceSlot(i + j)))),
        );
      process.send!({ ok: true, slots: slots.length });
    } else if (msg.cmd === 'stats') {
      // TTS bytes as they arrive, summed over the slots' sockets.
      process.send!({ ok: true, ...stats, ttsBytes: slots.reduce((a, s) => a + s.client.binaryBytes, 0) });
    } else if (msg.cmd === 'stop') {
      for (const s of slots.splice(0)) s.stop();
      for (const c of idle.splice(0)) c.close();
      process.send!({ ok: true });
      setTimeout(() => process.exit(0), 100);
    }
  } catch (e) {
    process.send!({ ok: false, error: String(e) });
  }
}
// Never outlive the bench.
setTimeout(() => process.exit(3), 15 * 60_000).unref();
