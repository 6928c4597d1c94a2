// The openai-realtime dialect against a server whose wire is the official OpenAI Python library's Realtime event
// models (PyPI `openai`, pinned in clients/openai-realtime/requirements.txt): every message the devices send must
// validate as the library's RealtimeClientEvent, every message they get is one of its server event models, the
// upgrade needs the Bearer key and an empty commit is an error, as OpenAI's API has it
// (clients/openai-realtime/serve.py).
// 50 devices PASS with no message refused and their response latency within max(40 ms, 10%) of the server's clock; a
// wrong key is refused before any load, naming 401. Runs in `npm run test:clients` (its venv is made once).
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { clientVenv, countEvents, serverMedian, startPyServer, type PyServer } from '../helpers/client-venv.ts';
import { runCli, voiceFleet } from '../helpers/proc.ts';

const KEY = 'sk-wakestorm-clients-0001';
const tmp = mkdtempSync(join(tmpdir(), 'wakestorm-openai-'));
const keyFile = join(tmp, 'key.txt');
writeFileSync(keyFile, `${KEY}\n`, { mode: 0o600 });

describe("openai-realtime against the OpenAI library's own event models", { timeout: 600_000 }, () => {
  let server: PyServer;
  before(async () => {
    const venv = clientVenv('openai-realtime', 'openai.types.realtime');
    server = await startPyServer(venv, ['--key', KEY, '--think-ms', '100', '--reply-ms', '1200']);
  });
  after(async () => {
    await server?.close();
  });

  it('50 devices PASS: every message valid, every speech end heard, latency on the server clock', async (t) => {
    const r = await voiceFleet(server.url, 'openai-realtime', 50, ['--token-file', keyFile]);
    const invalid = server.events.filter((e) => e.event === 'invalid');
    assert.deepEqual(invalid, [], 'every message the devices sent is a Realtime client event');
    assert.equal(r.code, 0, r.out);
    assert.equal(r.run.verdict, 'pass');
    assert.equal(countEvents(server, 'speech_stopped'), 50, 'the server VAD heard every utterance end');
    assert.equal(countEvents(server, 'turn'), 50);
    assert.equal(r.metrics.sessions_completed?.values.count, 50);
    const own = serverMedian(server);
    const device = r.metrics['response_latency{chaos:steady}']!.values.med!;
    assert.ok(
      Math.abs(device - own) <= Math.max(40, own * 0.1),
      `device p50 ${device.toFixed(1)} ms vs the server's own ${own.toFixed(1)} ms`,
    );
    t.diagnostic(`device p50 ${device.toFixed(1)} ms, the server's clock ${own.toFixed(1)} ms`);
  });

  it('a wrong key is refused before any load, naming 401', async () => {
    const wrong = join(tmp, 'wrong.txt');
    writeFileSync(wrong, 'sk-wrong\n', { mode: 0o600 });
    const refusedBefore = countEvents(server, 'refused');
    const r = await runCli(
      ['run', 'smoke', '--profile', 'esp32-hotpin', '--dialect', 'openai-realtime', '--server-url', server.url].concat([
        '--token-file',
        wrong,
      ]),
      { timeoutMs: 60_000 },
    );
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(r.stderr, /refused the upgrade with HTTP 401/);
    assert.equal(countEvents(server, 'refused'), refusedBefore + 1);
    assert.doesNotMatch(r.stdout + r.stderr, /sk-wrong/, 'the key is never printed');
  });
});
