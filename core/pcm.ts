// PCM s16le mono at the protocol's rate (core/protocol.ts): how long a buffer plays, and the frame energy that the
// server's VAD and the device's (which frames of the utterance are silence) both gate on.
import { PCM_BYTES_PER_MS } from './protocol.ts';

export function pcmDurationMs(bytes: number): number {
  return bytes / PCM_BYTES_PER_MS;
}

/**
 * Root mean square of a PCM s16le frame. Reads every second sample: plenty for an energy gate, and half the cost
 * when hundreds of devices stream at once.
 */
export function pcmRms(frame: Uint8Array): number {
  const n = frame.length >> 1;
  if (n === 0) return 0;
  const view = new DataView(frame.buffer, frame.byteOffset, n << 1);
  let sum = 0;
  let count = 0;
  for (let i = 0; i < n; i += 2) {
    const s = view.getInt16(i << 1, true);
    sum += s * s;
    count++;
  }
  return Math.sqrt(sum / count);
}
