// The CLI's side of what the native engine cannot run: the one line it prints before any load, from the engine's
// --capabilities and the scenario's wake schedule, dialect lifecycles and audio (k6 inspect).
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { engineRefusal, engineSourceHash } from '../../scripts/engine.ts';

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

describe('engineSourceHash', () => {
  it('changes with any Go source, go.mod or go.sum in the tree, the vendored modules included', () => {
    const dir = mkdtempSync(join(tmpdir(), 'engine-src-'));
    try {
      mkdirSync(join(dir, 'third_party', 'mod', 'sub'), { recursive: true });
      writeFileSync(join(dir, 'main.go'), 'package main\n');
      writeFileSync(join(dir, 'go.mod'), 'module x\n');
      writeFileSync(join(dir, 'third_party', 'mod', 'sub', 'a.go'), 'package sub\n');
      const before = engineSourceHash(dir);
      writeFileSync(join(dir, 'third_party', 'mod', 'sub', 'README.md'), 'not read by the build\n');
      assert.equal(engineSourceHash(dir), before);
      writeFileSync(join(dir, 'third_party', 'mod', 'sub', 'a.go'), 'package sub // patched\n');
      const patched = engineSourceHash(dir);
      assert.notEqual(patched, before);
      writeFileSync(join(dir, 'third_party', 'mod', 'go.sum'), 'x v1 h1:\n');
      assert.notEqual(engineSourceHash(dir), patched);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
