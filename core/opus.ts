// Opus as wakestorm uses it: the committed packet files (audio/*.opus with their frame tables, made once by
// scripts/make-opus.ts with libopus) and the duration of any packet from its TOC byte (RFC 6716 section 3.1), which
// is how a device times downlink Opus audio without decoding it.

/** The sample rates an Opus stream decodes at (RFC 6716 section 2): what a dialect or a hello may announce. */
export const OPUS_SAMPLE_RATES: readonly number[] = [8000, 12_000, 16_000, 24_000, 48_000];

/** Frame length of the committed packets (xiaozhi-esp32's OPUS_FRAME_DURATION_MS). */
export const OPUS_FRAME_MS = 60;

/** audio/<name>.opus.json: the frame table of audio/<name>.opus. */
export interface OpusTable {
  encoder: string;
  sample_rate: number;
  channels: number;
  frame_ms: number;
  /** Bytes of each speech packet, in order; the packets lie back to back in the .opus file. */
  sizes: number[];
  /** Per packet: quiet enough (RMS of its PCM) that an energy VAD hears silence. */
  silent: boolean[];
  /** A packet of silence follows the speech packets in the file. */
  silence_size: number;
}

export interface OpusClip {
  packets: Uint8Array[];
  silent: boolean[];
  silence: Uint8Array;
  frameMs: number;
}

/** Splits a packet file by its table; throws on a table that does not describe the file. */
export function opusClip(bytes: ArrayBuffer, table: OpusTable): OpusClip {
  const total = table.sizes.reduce((a, b) => a + b, 0) + table.silence_size;
  if (total !== bytes.byteLength || table.silent.length !== table.sizes.length)
    throw new Error(`Opus table (${total} bytes) does not match its packet file (${bytes.byteLength} bytes)`);
  const packets: Uint8Array[] = [];
  let off = 0;
  for (const n of table.sizes) {
    packets.push(new Uint8Array(bytes, off, n));
    off += n;
  }
  return {
    packets,
    silent: table.silent,
    silence: new Uint8Array(bytes, off, table.silence_size),
    frameMs: table.frame_ms,
  };
}

/** Frame length in 0.1 ms units by TOC config (RFC 6716 table 2): SILK 10/20/40/60, hybrid 10/20, CELT 2.5/5/10/20. */
const CONFIG_TENTHS = [
  100, 200, 400, 600, 100, 200, 400, 600, 100, 200, 400, 600, 100, 200, 100, 200, 25, 50, 100, 200, 25, 50, 100, 200,
  25, 50, 100, 200, 25, 50, 100, 200,
];

/** How long one Opus packet plays, in ms, from its TOC byte and frame count code; 0 for a malformed packet. */
export function opusPacketMs(p: Uint8Array): number {
  if (p.byteLength < 1) return 0;
  const toc = p[0]!;
  const frameTenths = CONFIG_TENTHS[toc >> 3]!;
  const code = toc & 3;
  let frames: number;
  if (code === 0) frames = 1;
  else if (code === 1 || code === 2) frames = 2;
  else {
    if (p.byteLength < 2) return 0;
    frames = p[1]! & 0x3f;
  }
  const ms = (frames * frameTenths) / 10;
  // A packet holds at most 120 ms of audio.
  return ms > 120 ? 0 : ms;
}
