// The CLI's side of what the native engine cannot run: the one line it prints before any load, from the engine's
// --capabilities and the scenario's wake schedule, dialect lifecycles and audio (k6 inspect).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { engineRefusal } from '../../scripts/engine.ts';

const caps = { version: '9.9.9', wake: ['off', 'once'], lifecycle: ['persistent'], audio: ['pcm_s16le/raw'] };

describe('engineRefusal', () => {
  it('passes a run the engine can honour', () => {
    assert.equal(engineRefusal(caps, { wake: 'once', lifecycles: ['persistent'], audio: ['pcm_s16le/raw'] }), null);
    // Audio matters only when the devices talk.
    assert.equal(engineRefusal(caps, { wake: 'off', lifecycles: ['persistent'], audio: ['opus/raw'] }), null);
  });
  it('names the first thing it cannot run, with the way out', () => {
    assert.equal(
      engineRefusal(caps, { wake: 'poisson', lifecycles: ['persistent'], audio: [] }),
      "wakestorm: the native engine (9.9.9) runs wake schedules off, once only, not 'poisson': add --wake off, or --engine k6",
    );
    assert.equal(
      engineRefusal(caps, { wake: 'once', lifecycles: ['persistent', 'per_wake'], audio: [] }),
      "wakestorm: the native engine (9.9.9) runs persistent links only, not a 'per_wake' dialect: use --engine k6",
    );
    assert.equal(
      engineRefusal(caps, { wake: 'once', lifecycles: ['persistent'], audio: ['pcm_s16le/raw', 'opus/xiaozhi-v2'] }),
      'wakestorm: the native engine (9.9.9) streams pcm_s16le/raw audio only, not opus/xiaozhi-v2: use --engine k6',
    );
  });
});
