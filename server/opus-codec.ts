// libopus for the server's xiaozhi channels (decoding) and for the committed audio (encoding, scripts/make-opus.ts),
// on opusscript's WASM build. opusscript 0.1.1's own wrapper views its PCM buffers at the wrong place:
// HEAPU16.subarray(bytePointer, …) indexes by 16-bit element, so the handler writes each frame at twice the address
// the wrapper allocated (the handler spreads each sample over two 16-bit elements, one byte in each, which the
// wrapper reads back as bytes). Past 8 MiB of the module's 16 MiB heap (the 79th decoder alive in a process) every
// decode traps ("memory access out of bounds": the server refused valid audio as "not an Opus packet"), and below
// that it writes over memory it never allocated. This wrapper drives the same handler with buffers allocated for what
// it reads and writes and views where it does, and opens another module (its own 16 MiB heap) every 64 coders.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

interface Handler {
  _decode(inPtr: number, len: number, outPtr: number): number;
  _encode(inPtr: number, bytes: number, outPtr: number, frameSize: number): number;
}
interface NativeModule {
  OpusScriptHandler: { new (rate: number, channels: number, app: number): Handler; destroy_handler(h: Handler): void };
  _malloc(n: number): number;
  _free(p: number): void;
  HEAPU8: Uint8Array;
  HEAPU16: Uint16Array;
}

/** libopus's largest packet (3 frames of 1276 bytes) and 60 ms at 48 kHz: opusscript's own bounds. */
const MAX_PACKET = 1276 * 3;
const MAX_FRAME_SAMPLES = (48_000 * 60) / 1000;
/** OPUS_APPLICATION_VOIP. */
const VOIP = 2048;
/** Coders one module holds: well inside its heap (a handler and its two buffers are ~100 KiB). */
const PER_MODULE = 64;

const modules: { native: NativeModule; open: number }[] = [];

function moduleWithRoom(): { native: NativeModule; open: number } {
  let m = modules.find((x) => x.open < PER_MODULE);
  if (!m) {
    const factory = require('opusscript/build/opusscript_native_wasm.js') as () => NativeModule;
    m = { native: factory(), open: 0 };
    modules.push(m);
  }
  return m;
}

/** One channel's Opus decoder: packets in, 16-bit PCM out; free() when the channel is done with it. */
export class OpusDecoder {
  private readonly m = moduleWithRoom();
  private readonly handler: Handler;
  private readonly inPtr: number;
  private readonly outPtr: number;
  private freed = false;

  constructor(
    rate: number,
    private readonly channels = 1,
  ) {
    const { native } = this.m;
    this.handler = new native.OpusScriptHandler(rate, channels, VOIP);
    this.inPtr = native._malloc(MAX_PACKET);
    // The handler writes each sample as two 16-bit elements (its low byte, then its high byte): 4 bytes a sample.
    this.outPtr = native._malloc(MAX_FRAME_SAMPLES * channels * 4);
    if (!this.inPtr || !this.outPtr) throw new Error('Opus decoder: out of WASM memory');
    this.m.open++;
  }

  /** A packet's PCM (a copy); throws on a packet libopus refuses. */
  decode(packet: Uint8Array): Buffer {
    if (this.freed) throw new Error('Opus decoder: used after free');
    if (packet.byteLength > MAX_PACKET) throw new Error('Opus packet too long');
    const heap = this.m.native.HEAPU8;
    heap.set(packet, this.inPtr);
    const samples = this.handler._decode(this.inPtr, packet.byteLength, this.outPtr);
    if (samples < 0) throw new Error(`Opus decode error ${samples}`);
    // One byte of PCM in each 16-bit element: Buffer.from keeps each element's low byte.
    const first = this.outPtr >> 1;
    return Buffer.from(this.m.native.HEAPU16.subarray(first, first + samples * this.channels * 2));
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    const { native } = this.m;
    native.OpusScriptHandler.destroy_handler(this.handler);
    native._free(this.inPtr);
    native._free(this.outPtr);
    this.m.open--;
  }
}

/**
 * An Opus encoder: 16-bit PCM frames in, packets out. The handler reads the PCM one byte per 16-bit element (and
 * reads twice as many elements as bytes), so the frame is spread out before it.
 */
export class OpusEncoder {
  private readonly m = moduleWithRoom();
  private readonly handler: Handler;
  private readonly inPtr: number;
  private readonly outPtr: number;

  constructor(rate: number, application = VOIP) {
    const { native } = this.m;
    this.handler = new native.OpusScriptHandler(rate, 1, application);
    this.inPtr = native._malloc(MAX_FRAME_SAMPLES * 2 * 2 * 2);
    this.outPtr = native._malloc(MAX_PACKET);
    if (!this.inPtr || !this.outPtr) throw new Error('Opus encoder: out of WASM memory');
    this.m.open++;
  }

  /** One frame of `samples` samples (its bytes, little-endian 16-bit) as a packet. */
  encode(pcm: Uint8Array, samples: number): Buffer {
    if (pcm.byteLength > MAX_FRAME_SAMPLES * 2) throw new Error('PCM frame longer than 60 ms at 48 kHz');
    const first = this.inPtr >> 1;
    this.m.native.HEAPU16.fill(0, first, first + MAX_FRAME_SAMPLES * 2 * 2);
    this.m.native.HEAPU16.set(pcm, first);
    const len = this.handler._encode(this.inPtr, pcm.byteLength, this.outPtr, samples);
    if (len < 0) throw new Error(`Opus encode error ${len}`);
    return Buffer.from(this.m.native.HEAPU8.slice(this.outPtr, this.outPtr + len));
  }

  free(): void {
    const { native } = this.m;
    native.OpusScriptHandler.destroy_handler(this.handler);
    native._free(this.inPtr);
    native._free(this.outPtr);
    this.m.open--;
  }
}
