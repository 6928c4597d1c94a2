// Audio for the fake pipeline: the committed espeak-ng recordings (PCM and their Opus packets) and the reply table.
import { readFileSync } from 'node:fs';
import { opusClip, type OpusTable } from '../core/opus.ts';

export interface Reply {
  /** What the fake STT "heard". */
  transcript: string;
  /** What the fake LLM answers. */
  text: string;
  /** The answer spoken by espeak-ng, PCM s16le 16 kHz mono. */
  pcm: Buffer;
  /** The same answer as Opus packets (audio/reply-N.opus, 60 ms each): what an Opus dialect streams. */
  opus: Buffer[];
}

/** The reply table: transcript, answer and its recording (see audio/README.md for how they were made). */
const TABLE: { transcript: string; text: string; file: string }[] = [
  {
    transcript: 'what is the weather like in lisbon today',
    text: 'It is sunny and twenty two degrees in Lisbon.',
    file: 'reply-0.pcm',
  },
  {
    transcript: 'when is my next meeting',
    text: 'Your next meeting starts at three in the afternoon.',
    file: 'reply-1.pcm',
  },
  { transcript: 'set a timer for ten minutes', text: 'I set a timer for ten minutes.', file: 'reply-2.pcm' },
  { transcript: 'turn off the kitchen lights', text: 'The kitchen lights are now off.', file: 'reply-3.pcm' },
];

let cached: Reply[] | null = null;

export function loadReplies(): Reply[] {
  if (!cached) {
    cached = TABLE.map((r) => {
      const pcm = readFileSync(new URL(`../audio/${r.file}`, import.meta.url));
      const base = r.file.replace(/\.pcm$/, '');
      const bytes = readFileSync(new URL(`../audio/${base}.opus`, import.meta.url));
      const table = JSON.parse(
        readFileSync(new URL(`../audio/${base}.opus.json`, import.meta.url), 'utf8'),
      ) as OpusTable;
      const clip = opusClip(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength), table);
      // An odd byte count would split a sample: keep the recording aligned.
      return {
        transcript: r.transcript,
        text: r.text,
        pcm: pcm.length % 2 ? pcm.subarray(0, pcm.length - 1) : pcm,
        opus: clip.packets.map((p) => Buffer.from(p)),
      };
    });
  }
  return cached;
}
