// Cuts the recorded utterance into uplink frames once per size, and marks which frames an energy VAD hears as silence.
import type { AudioFrames } from './device.ts';
import { VAD_THRESHOLD_RMS as VAD_THRESHOLD } from './protocol.ts';

export function makeAudioFrames(utterance: ArrayBuffer): AudioFrames {
  const cache = new Map<number, { speech: ArrayBuffer[]; silent: boolean[]; silence: ArrayBuffer }>();
  return {
    frames(frameBytes: number) {
      let f = cache.get(frameBytes);
      if (!f) {
        const speech: ArrayBuffer[] = [];
        const silent: boolean[] = [];
        for (let off = 0; off + frameBytes <= utterance.byteLength; off += frameBytes) {
          const frame = utterance.slice(off, off + frameBytes);
          const v = new Int16Array(frame);
          let sum = 0;
          for (let i = 0; i < v.length; i += 2) sum += v[i]! * v[i]!;
          speech.push(frame);
          silent.push(Math.sqrt(sum / Math.ceil(v.length / 2)) < VAD_THRESHOLD);
        }
        f = { speech, silent, silence: new ArrayBuffer(frameBytes) };
        cache.set(frameBytes, f);
      }
      return f;
    },
  };
}
