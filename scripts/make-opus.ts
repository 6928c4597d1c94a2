// Encodes the committed speech (audio/*.pcm) into real Opus packets once, with libopus 1.4 (opusscript's WASM build,
// through server/opus-codec.ts), for the devices and servers that speak Opus: 16 kHz mono, 60 ms frames
// (xiaozhi-esp32's OPUS_FRAME_DURATION_MS), VOIP.
// Writes audio/<name>.opus (the packets back to back) and audio/<name>.opus.json (the frame table). No encoder runs at
// load time: `npm run` this only when the PCM changes (audio/make.sh calls it).
import { readFileSync, writeFileSync } from 'node:fs';
import { pcmRms } from '../core/pcm.ts';
import { OPUS_FRAME_MS, type OpusTable } from '../core/opus.ts';
import { PCM_BYTES_PER_MS, VAD_THRESHOLD_RMS } from '../core/protocol.ts';
import { OpusEncoder } from '../server/opus-codec.ts';

const dir = new URL('../audio/', import.meta.url);
const frameBytes = OPUS_FRAME_MS * PCM_BYTES_PER_MS;
const samples = frameBytes / 2;

for (const name of ['utterance', 'reply-0', 'reply-1', 'reply-2', 'reply-3']) {
  const pcm = readFileSync(new URL(`${name}.pcm`, dir));
  const enc = new OpusEncoder(16000);
  const packets: Buffer[] = [];
  const silent: boolean[] = [];
  for (let off = 0; off < pcm.length; off += frameBytes) {
    // The last frame is padded with silence to a whole 60 ms.
    const frame = Buffer.alloc(frameBytes);
    pcm.copy(frame, 0, off, Math.min(pcm.length, off + frameBytes));
    packets.push(enc.encode(frame, samples));
    silent.push(pcmRms(frame) < VAD_THRESHOLD_RMS);
  }
  // One packet of silence after the speech: what a device streams while a VAD waits for the end of speech.
  const silence = enc.encode(Buffer.alloc(frameBytes), samples);
  enc.free();
  const table: OpusTable = {
    encoder: 'libopus 1.4 via opusscript 0.1.1, application VOIP, default bitrate',
    sample_rate: 16000,
    channels: 1,
    frame_ms: OPUS_FRAME_MS,
    sizes: packets.map((p) => p.length),
    silent,
    silence_size: silence.length,
  };
  writeFileSync(new URL(`${name}.opus`, dir), Buffer.concat([...packets, silence]));
  writeFileSync(new URL(`${name}.opus.json`, dir), `${JSON.stringify(table)}\n`);
  console.log(
    `${name}: ${packets.length} packets of ${OPUS_FRAME_MS} ms, ${packets.reduce((a, p) => a + p.length, 0)} bytes`,
  );
}
