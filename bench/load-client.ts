// The server bench's load process: N idle devices that answer keepalives, and M voice-session slots streaming real-time audio.
// Driven by its parent over IPC; bounded by the parent's commands and a hard deadline.
import { connectDevice, type ProtocolClient } from '../scripts/protocol-client.ts';

const base = process.env.TARGET!;
const idle: ProtocolClient[] = [];
const slots: { stop: () => void; client: ProtocolClient }[] = [];
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
        if ((await c.conversation(`w-${i}-${n}`, { realtime: true, stop: () => stopped })) === 'complete') stats.completed++;
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
      stats = { completed: 0, errors: 0 };
      for (let i = 0; i < msg.n!; i += 50) slots.push(...(await Promise.all(Array.from({ length: Math.min(50, msg.n! - i) }, (_, j) => voiceSlot(i + j)))));
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
});
// Never outlive the bench.
setTimeout(() => process.exit(3), 15 * 60_000).unref();
