// Cuts the recorded utterance into uplink frames once per size, and marks which frames an energy VAD hears as silence.
import type { AudioFrames } from './device-env.ts';
import { VAD_THRESHOLD_RMS } from './protocol.ts';
import { pcmRms } from './pcm.ts';

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
          speech.push(frame);
          silent.push(pcmRms(new Uint8Array(frame)) < VAD_THRESHOLD_RMS);
        }
        f = { speech, silent, silence: new ArrayBuffer(frameBytes) };
        cache.set(frameBytes, f);
      }
      return f;
    },
  };
}
