// The native device engine talking (engine/, --engine native): the same voice-to-voice truth, reply judgements,
// barge-in and resume as the k6 device is held to in dialects.test.ts, through real Toxiproxy and the real server;
// and what it cannot run is refused in one line before any load.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { PROFILES } from '../../core/profiles.ts';
import { startEngine } from '../../scripts/engine.ts';
import { runCli } from '../helpers/proc.ts';
import { assertVoiceToVoice, serverArgs } from '../helpers/truth.ts';

const results = mkdtempSync(join(tmpdir(), 'wakestorm-engine-'));
const metricsOf = () => JSON.parse(readFileSync(join(results, readlinkSync(join(results, 'latest')), 'summary.json'), 'utf8')).metrics;

describe('devices in the native engine', () => {
  const delays = { vad: 240, stt: 60, llm: 40, tts: 30 };

  it('measure the injected pipeline within 3 ms, judge replies whole, and see a barge-in stop the reply', async () => {
    const barge = join(results, 'recommended-barge.json');
    writeFileSync(barge, JSON.stringify({ ...PROFILES.recommended!, name: 'recommended-barge', barge_in_ms: 300 }));
    // The same device ending speech by the server's VAD (streaming silence until it hears the end), in 20 ms frames:
    // the 240 ms window is a whole number of them.
    const vad = join(results, 'recommended-vad.json');
    writeFileSync(vad, JSON.stringify({ ...PROFILES.recommended!, name: 'recommended-vad', end_of_speech: 'vad' }));
    const r = await runCli(
      ['run', 'smoke', '--engine', 'native', '--profile', `recommended:1,${vad}:1,${barge}:1`, '--devices', '12', '--duration', '20s', '--wake', 'poisson:4s', '--results', results, ...serverArgs(delays)],
      { timeoutMs: 150_000 },
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const m = metricsOf();
    assertVoiceToVoice(m, ['recommended', 'recommended-vad'], delays);
    assert.equal(m.wake_success.values.rate, 1);
    assert.ok(m.sessions_completed.values.count >= 6, `${m.sessions_completed.values.count} conversations completed`);
    assert.equal(m.reply_truncated.values.rate, 0);
    assert.equal(m.reply_stutter.values.rate, 0);
    assert.ok(m.audio_frames.values.count > 1000, 'uplink frames counted');
    assert.equal(m.audio_slips?.values.count ?? 0, 0);
    assert.ok(m.barge_ins.values.count >= 2, `${m.barge_ins.values.count} barge-ins`);
    assert.equal(m.barge_in_stop_time.values.count, m.barge_ins.values.count);
    assert.ok(m.barge_in_stop_time.values['p(95)'] < 500, `stale audio for ${m.barge_in_stop_time.values['p(95)']} ms`);
    assert.equal(m.sessions_dropped?.values.count ?? 0, 0, 'a barge-in is not a drop');
  });

  it('resume a conversation cut mid-reply', async () => {
    const timeline = join(results, 'cut-mid-reply.json');
    writeFileSync(timeline, JSON.stringify([{ at: '5500ms', for: '1500ms', fault: 'cut' }]));
    const r = await runCli(
      ['run', 'smoke', '--engine', 'native', '--profile', 'recommended', '--devices', '6', '--duration', '16s', '--wake', 'once:1s-1500ms', '--timeline', timeline, '--results', results, '--server-arg', '--tts-pace=realtime'],
      { timeoutMs: 150_000 },
    );
    assert.ok(r.code === 0 || r.code === 99, r.stdout + r.stderr);
    const m = metricsOf();
    assert.ok((m.sessions_resumed?.values.count ?? 0) >= 1, 'conversations resume after the cut');
    assert.ok((m.resume_success?.values.rate ?? 0) === 1, 'the server kept every session');
  });

  it('refuse what they cannot run, in one line before any load: the CLI, and the engine itself', async () => {
    const r = await runCli(['run', 'smoke', '--engine', 'native', '--profile', 'xiaozhi-esp32', '--devices', '2', '--duration', '5s', '--results', results]);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(r.stderr.trim(), /^wakestorm: the native engine \([\d.]+\) runs persistent links only, not a 'per_wake' dialect: use --engine k6$/);
    const engine = await startEngine();
    try {
      const ws = new WebSocket(engine.url);
      const answer = await new Promise<string>((resolve, reject) => {
        ws.on('open', () => ws.send(JSON.stringify({ type: 'start', devices: [], profiles: [], dialects: {} })));
        ws.on('message', (d) => resolve(String(d)));
        ws.on('error', reject);
      });
      ws.close();
      assert.deepEqual(JSON.parse(answer), { type: 'error', message: 'wakestorm-engine: a start names 1 to 100000 devices, got 0' });
    } finally {
      await engine.stop();
    }
  });
});
