// The audio a dialect may carry besides Opus: PCM s16le at 8, 16, 24 or 48 kHz and G.711 µ-law at 8 kHz, in binary
// frames or as base64 inside JSON (framing 'json'). The committed speech is 16 kHz PCM: other rates are made from it
// by one integer rule (linear interpolation, floored), so both device engines send the same bytes (engine/codec.go is
// the Go twin, pinned by the trace corpus). Downlink audio is timed by its length, never decoded.
import { PCM_SAMPLE_RATE } from './protocol.ts';

/** PCM sample rates a dialect may use (the usual voice-API rates). */
export const PCM_RATES: readonly number[] = [8000, 16_000, 24_000, 48_000];
/** G.711 µ-law is 8 kHz, one byte a sample. */
export const MULAW_RATE = 8000;

const floorDiv = (a: number, b: number) => Math.floor(a / b);

/**
 * 16 kHz PCM s16le resampled to `rate`: output sample j is the source at j·16000/rate, interpolated linearly between
 * its two neighbours and floored (integer arithmetic, the same in Go).
 */
export function resamplePcm(pcm: Uint8Array, rate: number): Uint8Array {
  if (rate === PCM_SAMPLE_RATE) return pcm;
  const src = new DataView(pcm.buffer, pcm.byteOffset, pcm.byteLength);
  const n = pcm.byteLength >> 1;
  const m = floorDiv(n * rate, PCM_SAMPLE_RATE);
  const out = new Uint8Array(m * 2);
  const dst = new DataView(out.buffer);
  for (let j = 0; j < m; j++) {
    const num = j * PCM_SAMPLE_RATE;
    const i = floorDiv(num, rate);
    const rem = num - i * rate;
    const a = src.getInt16(i * 2, true);
    const b = i + 1 < n ? src.getInt16((i + 1) * 2, true) : a;
    dst.setInt16(j * 2, a + floorDiv((b - a) * rem, rate), true);
  }
  return out;
}

/** The top of each µ-law segment, on the 14-bit magnitude plus bias (Sun's g711.c, which CPython's audioop uses). */
const ULAW_SEG_END = [0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff, 0x1fff];

/** One linear PCM sample as G.711 µ-law, as the reference g711.c encodes it (14 bits, bias 33, clip 8159). */
function mulawByte(sample: number): number {
  let v = sample >> 2;
  let mask = 0xff;
  if (v < 0) {
    v = -v;
    mask = 0x7f;
  }
  v = Math.min(v, 8159) + 33;
  let seg = 0;
  while (seg < 8 && v > ULAW_SEG_END[seg]!) seg++;
  if (seg >= 8) return 0x7f ^ mask;
  return ((seg << 4) | ((v >> (seg + 1)) & 0x0f)) ^ mask;
}

/** PCM s16le as µ-law, a byte a sample. */
export function mulawEncode(pcm: Uint8Array): Uint8Array {
  const v = new DataView(pcm.buffer, pcm.byteOffset, pcm.byteLength);
  const out = new Uint8Array(pcm.byteLength >> 1);
  for (let i = 0; i < out.length; i++) out[i] = mulawByte(v.getInt16(i * 2, true));
  return out;
}

/** The committed 16 kHz speech in a dialect's PCM or µ-law at its rate. */
export function encodeSpeech(pcm16k: Uint8Array, codec: 'pcm_s16le' | 'mulaw', rate: number): Uint8Array {
  const pcm = resamplePcm(pcm16k, rate);
  return codec === 'mulaw' ? mulawEncode(pcm) : pcm;
}

/** Bytes of one ms of audio in a PCM or µ-law codec at `rate`. */
export function bytesPerMs(codec: string, rate: number): number {
  return ((codec === 'mulaw' ? 1 : 2) * rate) / 1000;
}

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

/** Standard base64 with padding (RFC 4648 §4): k6 has no Buffer, and this runs in both k6 and Node. */
export function base64(bytes: Uint8Array): string {
  let out = '';
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    out += B64[n >> 18]! + B64[(n >> 12) & 63]! + B64[(n >> 6) & 63]! + B64[n & 63]!;
  }
  const left = bytes.length - i;
  if (left === 1) {
    const n = bytes[i]! << 16;
    out += `${B64[n >> 18]!}${B64[(n >> 12) & 63]!}==`;
  } else if (left === 2) {
    const n = (bytes[i]! << 16) | (bytes[i + 1]! << 8);
    out += `${B64[n >> 18]!}${B64[(n >> 12) & 63]!}${B64[(n >> 6) & 63]!}=`;
  }
  return out;
}

/** How many bytes a base64 text decodes to, without decoding it; null when it is not base64's shape. */
export function base64Length(s: string): number | null {
  if (s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) return null;
  const pad = s.endsWith('==') ? 2 : s.endsWith('=') ? 1 : 0;
  return (s.length / 4) * 3 - pad;
}
