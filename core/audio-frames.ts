// The uplink utterance, prepared once per process (k6: per VU) and shared by its devices: PCM cut into frames of one
// size with the frames an energy VAD hears as silence, and the same speech as committed Opus packets.
import type { AudioFrames } from './device-env.ts';
import { opusClip, type OpusClip, type OpusTable } from './opus.ts';
import { pcmRms } from './pcm.ts';
import { VAD_THRESHOLD_RMS } from './protocol.ts';

export function makeAudioFrames(utterance: ArrayBuffer, opus?: { bytes: ArrayBuffer; table: OpusTable }): AudioFrames {
  const cache = new Map<number, { speech: ArrayBuffer[]; silent: boolean[]; silence: ArrayBuffer }>();
  let clip: OpusClip | null = null;
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
    opus() {
      if (!opus) throw new Error('no Opus packets loaded: this process was given the PCM utterance only');
      clip ??= opusClip(opus.bytes, opus.table);
      return clip;
    },
  };
}
