// The conformance cases both device engines run (the k6 device in test/scenarios/dialects.test.ts, the native engine in
// engine.test.ts): the same fleet, dialects, fault and assertions against the same injected truths, so a behaviour one
// engine gets right and the other wrong fails a test.
import assert from 'node:assert/strict';
import { readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PROFILES } from '../../core/profiles.ts';
import { SATURATION } from '../../core/verdict.ts';
import { runCli } from './proc.ts';
import { assertVoiceToVoice, serverArgs } from './truth.ts';

export type Engine = 'k6' | 'native';

const metricsOf = (results: string) =>
  JSON.parse(readFileSync(join(results, readlinkSync(join(results, 'latest')), 'summary.json'), 'utf8')).metrics;

/**
 * A mixed fleet, wakestorm PCM (explicit and VAD end of speech) and xiaozhi Opus on per-wake channels, with one barging
 * profile per dialect: voice-to-voice within 3 ms (6 late) of the injected truth for every dialect, replies whole, every
 * barge-in measured, follow-ups on a listening channel, nothing dropped.
 */
export async function mixedFleet(engine: Engine, results: string): Promise<void> {
  // An endpointing window other than the server's default: the device knows nothing of it and must measure it. 240 ms
  // is a whole number of both dialects' frames, 20 ms PCM and 60 ms Opus.
  const delays = { vad: 240, stt: 60, llm: 40, tts: 30 };
  const variant = (base: string, name: string, change: object) => {
    const f = join(results, `${name}.json`);
    writeFileSync(f, JSON.stringify({ ...PROFILES[base]!, name, ...change }));
    return `${f}:1`;
  };
  const profiles = [
    'recommended:1',
    'xiaozhi-esp32:1',
    variant('recommended', 'recommended-vad', { end_of_speech: 'vad' }),
    // One more profile per dialect that interrupts every reply 300 ms in (the dialect's abort).
    variant('recommended', 'recommended-barge', { barge_in_ms: 300 }),
    variant('xiaozhi-esp32', 'xiaozhi-esp32-barge', { barge_in_ms: 300 }),
  ];
  const r = await runCli(
    [
      'run',
      'smoke',
      '--engine',
      engine,
      '--profile',
      profiles.join(','),
      '--devices',
      '15',
      '--duration',
      '24s',
      '--wake',
      'poisson:4s',
      '--results',
      results,
      ...serverArgs(delays),
    ],
    { timeoutMs: 150_000 },
  );
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const m = metricsOf(results);
  assertVoiceToVoice(m, ['recommended', 'recommended-vad', 'xiaozhi-esp32'], delays);
  assert.equal(m.wake_success.values.rate, 1);
  assert.ok(
    m['wake_ack_latency{chaos:steady,profile:xiaozhi-esp32}'].values.count >= 3,
    'xiaozhi wakes acknowledged by the channel handshake',
  );
  // A per-wake channel is a connect per conversation: connect and handshake times are measured every wake.
  assert.ok(m.connect_time.values.count >= m['wake_ack_latency{chaos:steady,profile:xiaozhi-esp32}'].values.count);
  assert.ok(m.handshake_time.values.count > 0);
  // Back to listening after each reply (auto mode): the next turn on an open channel is the user speaking again.
  assert.ok(
    (m.follow_ups?.values.count ?? 0) >= 1,
    'follow-up turns on a listening channel (only xiaozhi profiles listen on)',
  );
  assert.equal(m.unplanned_drops?.values.count ?? 0, 0);
  assert.equal(m.reply_truncated.values.rate, 0);
  assert.equal(m.reply_stutter.values.rate, 0);
  assert.ok(m.audio_frames.values.count > 1000, 'uplink frames counted');
  // Paced in real time: at most what a jitter buffer absorbs (a whole VM stall once, not a pacing fault, seen in CI).
  const slips = m.audio_slips?.values.count ?? 0;
  assert.ok(
    slips <= m.audio_frames.values.count * SATURATION.heldAudioSlipShare,
    `${slips} of ${m.audio_frames.values.count} uplink frames late`,
  );
  // Barge-in: every interruption measured; the server stops at the abort, so only what was already in flight (its
  // real-time lead) arrives after it; an interrupted reply is the user talking, not a dropped session.
  assert.ok(m.barge_ins.values.count >= 4, `${m.barge_ins.values.count} barge-ins`);
  assert.equal(m.barge_in_stop_time.values.count, m.barge_ins.values.count);
  assert.ok(m.barge_in_stop_time.values['p(95)'] < 500, `stale audio for ${m.barge_in_stop_time.values['p(95)']} ms`);
  assert.equal(m.sessions_dropped?.values.count ?? 0, 0, 'a barge-in is not a drop');
}

/** A cut mid-reply drops xiaozhi conversations (the dialect has no resume) while wakestorm ones resume. */
export async function cutMidReply(engine: Engine, results: string): Promise<void> {
  const timeline = join(results, 'cut-mid-reply.json');
  // Wakes at 1-2 s; 3 s of speech, the pipeline, then a 2 s reply streamed in real time: 5.5 s is mid-reply.
  writeFileSync(timeline, JSON.stringify([{ at: '5500ms', for: '1500ms', fault: 'cut' }]));
  const r = await runCli(
    [
      'run',
      'smoke',
      '--engine',
      engine,
      '--profile',
      'recommended:1,xiaozhi-esp32:1',
      '--devices',
      '8',
      '--duration',
      '16s',
      '--wake',
      'once:1s-1500ms',
      '--timeline',
      timeline,
      '--results',
      results,
      '--server-arg',
      '--tts-pace=realtime',
    ],
    { timeoutMs: 150_000 },
  );
  assert.ok(r.code === 0 || r.code === 99, r.stdout + r.stderr);
  const m = metricsOf(results);
  assert.ok(
    (m['sessions_dropped{reason:lost}']?.values.count ?? 0) >= 1,
    'xiaozhi conversations cut mid-reply are lost',
  );
  assert.ok((m.sessions_resumed?.values.count ?? 0) >= 1, 'wakestorm conversations resume after the cut');
  assert.equal(m.resume_success?.values.rate, 1, 'the server kept every wakestorm session');
}
