// The audio a dialect carries besides Opus (core/audio-codec.ts), held to references we did not write: µ-law against
// CPython's audioop.lin2ulaw (Sun's g711.c; values computed with it once, below), base64 against Node's Buffer, and the
// resampler's lengths and its exactness at the source's own samples.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { base64, base64Length, encodeSpeech, mulawEncode, resamplePcm } from '../../core/audio-codec.ts';

const pcm = (vals: number[]) => {
  const b = Buffer.alloc(vals.length * 2);
  vals.forEach((v, i) => b.writeInt16LE(v, i * 2));
  return new Uint8Array(b.buffer, b.byteOffset, b.length);
};

describe('audio codecs', () => {
  it('encodes µ-law as audioop.lin2ulaw does', () => {
    const vals = [0, 1, -1, 100, -100, 1000, -1000, 5000, -5000, 32767, -32768, 12345, -12345];
    // python3 -c "import audioop,struct; print(list(audioop.lin2ulaw(b''.join(struct.pack('<h',v) for v in VALS),2)))"
    const audioop = [255, 255, 126, 242, 114, 206, 78, 171, 43, 128, 0, 151, 23];
    assert.deepEqual([...mulawEncode(pcm(vals))], audioop);
  });

  it("writes base64 as Node's Buffer does, and knows a text's decoded length without decoding it", () => {
    for (const n of [0, 1, 2, 3, 4, 5, 640, 641, 642]) {
      const bytes = new Uint8Array(n).map((_, i) => (i * 37 + 11) & 255);
      const text = base64(bytes);
      assert.equal(text, Buffer.from(bytes).toString('base64'));
      assert.equal(base64Length(text), n);
    }
    assert.equal(base64Length('not base64!'), null);
    assert.equal(base64Length('abc'), null);
  });

  it('resamples 16 kHz to the dialect rates: the right length, and the source samples where they fall', () => {
    const src = pcm(Array.from({ length: 320 }, (_, i) => Math.round(8000 * Math.sin(i / 5))));
    const view = (b: Uint8Array) => new Int16Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    for (const rate of [8000, 24_000, 48_000]) {
      const out = view(resamplePcm(src, rate));
      assert.equal(out.length, (320 * rate) / 16_000);
      const s = view(src);
      // Every output sample that falls on a source sample is that sample.
      for (let j = 0; j < out.length; j++) if ((j * 16_000) % rate === 0) assert.equal(out[j], s[(j * 16_000) / rate]);
    }
    assert.equal(encodeSpeech(src, 'mulaw', 8000).length, 160);
    assert.equal(resamplePcm(src, 16_000), src);
  });
});
