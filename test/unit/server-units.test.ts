// Small pieces of the server: frame energy for the VAD, flag parsing, and upgrade routing.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { opusClip, type OpusTable } from '../../core/opus.ts';
import { OpusDecoder, OpusEncoder } from '../../server/opus-codec.ts';
import { loadReplies } from '../../server/audio.ts';
import { pcmRms } from '../../core/pcm.ts';
import { ConfigError, NUMERIC_FLAGS, parseIntFlag, parsePace } from '../../server/config.ts';
import { routeUpgrade } from '../../server/admission.ts';
import { UTTERANCE } from '../../scripts/protocol-client.ts';

describe('pcmRms', () => {
  it('is 0 for silence and high for the recorded speech', () => {
    assert.equal(pcmRms(Buffer.alloc(640)), 0);
    const loud = Buffer.alloc(640);
    for (let i = 0; i < 320; i++) loud.writeInt16LE(i % 2 ? 1000 : -1000, i * 2);
    assert.ok(Math.abs(pcmRms(loud) - 1000) < 1);
    // A frame that starts at an odd offset of its buffer (as ws may hand one over) reads the same samples.
    const odd = Buffer.alloc(641);
    loud.copy(odd, 1);
    assert.equal(pcmRms(odd.subarray(1)), pcmRms(loud));
    // The device's frame table (an ArrayBuffer slice) and the server's Buffer agree frame by frame.
    const ab = UTTERANCE.buffer.slice(UTTERANCE.byteOffset, UTTERANCE.byteOffset + 640);
    assert.equal(pcmRms(new Uint8Array(ab)), pcmRms(UTTERANCE.subarray(0, 640)));
    // The utterance has speech well above the default threshold of 300.
    const frames = [];
    for (let i = 0; i + 640 <= UTTERANCE.length; i += 640) frames.push(pcmRms(UTTERANCE.subarray(i, i + 640)));
    assert.ok(frames.filter((r) => r > 300).length > frames.length / 2);
  });

  it('loads the reply table with real recordings', () => {
    const r = loadReplies();
    assert.ok(r.length >= 3);
    assert.equal(new Set(r.map((x) => x.text)).size, r.length, 'texts differ');
    for (const x of r) assert.ok(x.pcm.length > 32000 && x.pcm.length % 2 === 0);
  });
});

describe('config parsing', () => {
  it('rejects non-integers and out-of-range values, naming the flag', () => {
    assert.equal(parseIntFlag('--port', '8080', 0, 65535), 8080);
    assert.throws(
      () => parseIntFlag('--port', '80.5', 0, 65535),
      (e: Error) => e instanceof ConfigError && /--port/.test(e.message),
    );
    assert.throws(() => parseIntFlag('--stt-ms', '-1', 0, 10), /--stt-ms must be between 0 and 10/);
    assert.equal(parsePace('burst'), 'burst');
    assert.throws(() => parsePace('fast'), /--tts-pace/);
    const rate = NUMERIC_FLAGS.find((f) => f.flag === '--xiaozhi-downlink-rate')!;
    assert.equal(parseIntFlag(rate.flag, '24000', rate.min, rate.max, rate.oneOf), 24_000);
    assert.throws(
      () => parseIntFlag(rate.flag, '22050', rate.min, rate.max, rate.oneOf),
      /--xiaozhi-downlink-rate must be one of 8000, 12000, 16000, 24000, 48000, got 22050/,
    );
  });
});

describe('routeUpgrade', () => {
  it('routes /ws and /ws/{id} with resume and token, and nothing else', () => {
    assert.deepEqual(routeUpgrade('/ws'), { deviceId: null, token: undefined });
    assert.deepEqual(routeUpgrade('/ws/dev-1?resume=abc&token=t'), { deviceId: 'dev-1', resume: 'abc', token: 't' });
    assert.equal(routeUpgrade('/wss'), null);
    assert.equal(routeUpgrade('/ws/dev 1'), null);
    assert.equal(routeUpgrade('/ws/%E0%A4%A'), null);
  });
});

describe('server/opus-codec.ts: libopus for the xiaozhi channels and the committed audio', () => {
  const bytes = readFileSync(new URL('../../audio/utterance.opus', import.meta.url));
  const table = JSON.parse(
    readFileSync(new URL('../../audio/utterance.opus.json', import.meta.url), 'utf8'),
  ) as OpusTable;
  const clip = opusClip(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength), table);

  it('holds hundreds of channels at once, each decoding the committed speech as libopus does', () => {
    // opusscript's own wrapper trapped from its 79th decoder alive on ("memory access out of bounds"): the server
    // refused valid audio from the 80th xiaozhi channel with 1008.
    const reference = new OpusDecoder(16000);
    const want = clip.packets.slice(0, 12).map((p) => reference.decode(p));
    reference.free();
    // The decoded speech is speech: as loud as the PCM it was encoded from, within Opus's loss.
    const source = readFileSync(new URL('../../audio/utterance.pcm', import.meta.url));
    const frame = table.frame_ms * 32;
    const k = want.findIndex((w, i) => pcmRms(source.subarray(i * frame, (i + 1) * frame)) > 2000);
    assert.ok(k >= 0 && pcmRms(want[k]!) > 1000, 'a voiced frame decodes voiced');
    const decoders = Array.from({ length: 300 }, () => new OpusDecoder(16000));
    try {
      for (const d of decoders)
        for (const [i, p] of clip.packets.slice(0, 12).entries()) assert.ok(d.decode(p).equals(want[i]!));
    } finally {
      for (const d of decoders) d.free();
    }
  });

  it('encodes the committed speech to the committed packets, byte for byte (scripts/make-opus.ts)', () => {
    const source = readFileSync(new URL('../../audio/utterance.pcm', import.meta.url));
    const frame = table.frame_ms * 32;
    const enc = new OpusEncoder(16000);
    try {
      for (const [i, packet] of clip.packets.entries()) {
        const pcm = Buffer.alloc(frame);
        source.copy(pcm, 0, i * frame, Math.min(source.length, (i + 1) * frame));
        assert.ok(enc.encode(pcm, frame / 2).equals(Buffer.from(packet)), `packet ${i}`);
      }
    } finally {
      enc.free();
    }
  });

  it('refuses a packet libopus refuses, and use after free', () => {
    const d = new OpusDecoder(16000);
    assert.throws(() => d.decode(new Uint8Array(5000)), /too long/);
    d.free();
    assert.throws(() => d.decode(clip.packets[0]!), /after free/);
  });
});
