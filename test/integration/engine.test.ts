// The native device engine talking (engine/, --engine native): the conformance cases the k6 device runs in
// test/scenarios/dialects.test.ts (both dialects, voice-to-voice truth, reply judgements, barge-in, resume and its absence), through
// real Toxiproxy and the real server; and what it cannot run is refused in one line before any load.
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { startEngine } from '../../scripts/engine.ts';
import { runCli } from '../helpers/proc.ts';
import { cutMidReply, mixedFleet } from '../helpers/conformance.ts';

const results = mkdtempSync(join(tmpdir(), 'wakestorm-engine-'));

describe('devices in the native engine', () => {
  it('a mixed fleet of wakestorm PCM and xiaozhi Opus devices passes, each measuring the injected pipeline delay; barging devices of both dialects see the server stop at once', () =>
    mixedFleet('native', results));
  it('a cut mid-reply drops xiaozhi conversations (the dialect has no resume) and wakestorm ones resume', () =>
    cutMidReply('native', results));

  it("refuse what they cannot run, in one line before any load (the CLI's side: test/unit/engine-refusal.test.ts)", async () => {
    const r = await runCli([
      'run',
      'smoke',
      '--engine',
      'chromium',
      '--devices',
      '2',
      '--duration',
      '5s',
      '--results',
      results,
    ]);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    const engine = await startEngine();
    try {
      const ws = new WebSocket(engine.url);
      const answer = await new Promise<string>((resolve, reject) => {
        ws.on('open', () => ws.send(JSON.stringify({ type: 'start', devices: [], profiles: [], dialects: {} })));
        ws.on('message', (d) => resolve(String(d)));
        ws.on('error', reject);
      });
      ws.close();
      assert.deepEqual(JSON.parse(answer), {
        type: 'error',
        message: 'wakestorm-engine: a start names 1 to 100000 devices, got 0',
      });
    } finally {
      await engine.stop();
    }
  });
});
