// Audio as base64 inside JSON (issue 37, item 4): the shipped openai-realtime and twilio-media-streams dialects run
// 50 devices each against servers written from those protocols' public docs (test/helpers/realtime-server.ts), and
// the response latency the devices measure is held to the server's own clock (its last voiced audio in, its first
// reply audio out): within max(40 ms, 10%) at the median. A wrong key is refused before any load, naming 401.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startMediaStreamServer, startRealtimeServer, type VoiceApiServer } from '../helpers/realtime-server.ts';
import { runCli, voiceFleet } from '../helpers/proc.ts';

const tmp = mkdtempSync(join(tmpdir(), 'wakestorm-json-audio-'));
const KEY = 'sk-wakestorm-test-0001';
const keyFile = join(tmp, 'key.txt');
writeFileSync(keyFile, `${KEY}\n`);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

/** The device's median response latency against the server's own, within max(40 ms, 10%). */
function agrees(r: Awaited<ReturnType<typeof voiceFleet>>, server: VoiceApiServer): string {
  const device = r.metrics['response_latency{chaos:steady}']!.values.med!;
  const own = median(server.turns.map((t) => t.firstAudioAt - t.lastVoicedAt));
  assert.ok(
    Math.abs(device - own) <= Math.max(40, own * 0.1),
    `device p50 ${device.toFixed(1)} ms vs the server's own ${own.toFixed(1)} ms`,
  );
  return `device p50 ${device.toFixed(1)} ms, server ${own.toFixed(1)} ms`;
}

describe('audio as base64 in JSON, against servers written from the protocols', { timeout: 600_000 }, () => {
  let realtime: VoiceApiServer;
  let media: VoiceApiServer;
  before(async () => {
    realtime = await startRealtimeServer({ key: KEY, thinkMs: 250, replyMs: 1200 });
    media = await startMediaStreamServer({ thinkMs: 250, replyMs: 1200 });
  });
  after(async () => {
    await realtime.close();
    await media.close();
  });

  it('openai-realtime: 50 devices PASS, every speech end heard, latency on the server clock', async (t) => {
    const r = await voiceFleet(realtime.url, 'openai-realtime', 50, ['--token-file', keyFile]);
    assert.equal(r.code, 0, r.out);
    assert.equal(r.run.verdict, 'pass');
    assert.equal(realtime.counts.speechStopped, 50, 'the server VAD heard every utterance end');
    assert.equal(r.metrics.sessions_completed?.values.count, realtime.counts.responses);
    assert.equal(r.metrics.wakes_without_ack?.values.count, 50, 'nothing acknowledges a wake in this protocol');
    t.diagnostic(agrees(r, realtime));
  });

  it('twilio-media-streams: 50 calls PASS, every mark echoed, latency on the server clock', async (t) => {
    const r = await voiceFleet(media.url, 'twilio-media-streams', 50);
    assert.equal(r.code, 0, r.out);
    assert.equal(r.run.verdict, 'pass');
    assert.equal(media.counts.speechStopped, 50);
    assert.equal(media.counts.marksEchoed, 50, 'every call played its reply and echoed the mark');
    t.diagnostic(agrees(r, media));
  });

  it('a wrong key is refused before any load, naming 401', async () => {
    const wrong = join(tmp, 'wrong.txt');
    writeFileSync(wrong, 'sk-wrong\n');
    const before = realtime.counts.refused;
    const r = await runCli(
      [
        'run',
        'smoke',
        '--profile',
        'esp32-hotpin',
        '--dialect',
        'openai-realtime',
        '--server-url',
        realtime.url,
      ].concat(['--token-file', wrong]),
      { timeoutMs: 60_000 },
    );
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(r.stderr, /refused the upgrade with HTTP 401/);
    assert.equal(realtime.counts.refused, before + 1);
  });
});
