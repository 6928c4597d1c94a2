// Dialects end to end: the reference server speaks xiaozhi-esp32's protocol to a plain client (real Opus both ways,
// its binary framings, bad input closed); k6 devices of both dialects, mixed in one fleet with barging ones, through
// Toxiproxy; a cut mid-reply drops xiaozhi conversations (no resume in that dialect) while wakestorm ones resume; and
// the README's user-dialect example runs as written against a small server of that imaginary protocol.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import WebSocket from 'ws';
import { frameAudio, unframeAudio } from '../../core/dialect.ts';
import { opusClip, opusPacketMs, type OpusTable } from '../../core/opus.ts';
import { startVoiceServer, type VoiceServer } from '../../server/server.ts';
import { startAcmeServer } from '../helpers/acme-server.ts';
import { ROOT, runCli } from '../helpers/proc.ts';
import { assertVoiceToVoice, serverArgs } from '../helpers/truth.ts';

const results = mkdtempSync(join(tmpdir(), 'wakestorm-dialects-'));
const servers: VoiceServer[] = [];
after(async () => {
  for (const s of servers) await s.close();
});

function clip(name: string) {
  const b = readFileSync(join(ROOT, 'audio', `${name}.opus`));
  return opusClip(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer, JSON.parse(readFileSync(join(ROOT, 'audio', `${name}.opus.json`), 'utf8')) as OpusTable);
}

/** One xiaozhi conversation by hand: hello, listen detect + start, the utterance in real time, then silence. */
async function xiaozhiConversation(s: VoiceServer, version: '1' | '2' | '3') {
  const framing = version === '1' ? 'raw' : version === '2' ? 'xiaozhi-v2' : 'xiaozhi-v3';
  const utt = clip('utterance');
  const ws = new WebSocket(`${s.wsUrl}/xiaozhi/v1/`, { headers: { 'Device-Id': '02:00:00:00:00:01', 'Protocol-Version': version, 'Client-Id': 'c' } });
  const events: Record<string, unknown>[] = [];
  let replyMs = 0;
  let timer: NodeJS.Timeout | null = null;
  const done = new Promise<void>((resolve, reject) => {
    ws.on('message', (d, bin) => {
      if (bin) {
        const p = unframeAudio(framing, new Uint8Array(d as Buffer));
        assert.ok(p, 'each downlink frame holds together in its framing');
        replyMs += opusPacketMs(p!);
        return;
      }
      const m = JSON.parse(d.toString()) as Record<string, unknown>;
      events.push(m);
      if (m.type === 'hello') {
        ws.send(JSON.stringify({ session_id: m.session_id, type: 'listen', state: 'detect', text: 'hey' }));
        ws.send(JSON.stringify({ session_id: m.session_id, type: 'listen', state: 'start', mode: 'auto' }));
        let i = 0;
        const tick = () => {
          const p = i < utt.packets.length ? utt.packets[i]! : utt.silence;
          ws.send(Buffer.from(frameAudio(framing, p, i * 60)));
          i++;
          if (i < utt.packets.length + 30) timer = setTimeout(tick, 60);
        };
        tick();
      }
      if (m.type === 'tts' && m.state === 'stop') resolve();
    });
    ws.on('close', (code) => reject(new Error(`closed ${code} before the reply ended`)));
    ws.on('open', () => ws.send(JSON.stringify({ type: 'hello', version: 1, transport: 'websocket', audio_params: { format: 'opus', sample_rate: 16000, channels: 1, frame_duration: 60 } })));
  });
  await done;
  if (timer) clearTimeout(timer);
  ws.removeAllListeners('close');
  ws.close();
  return { events, replyMs };
}

describe('the reference server speaks xiaozhi', () => {
  it('answers hello, hears Opus speech through its VAD, and replies with stt, llm, tts and Opus audio, in every framing', async () => {
    const s = await startVoiceServer({ port: 0, sttMs: 20, llmMs: 20, ttsMs: 20, ttsPace: 'burst' });
    servers.push(s);
    for (const v of ['1', '2', '3'] as const) {
      const { events, replyMs } = await xiaozhiConversation(s, v);
      const kinds = events.map((e) => (e.type === 'tts' ? `tts:${e.state}` : e.type));
      assert.deepEqual(kinds, ['hello', 'stt', 'llm', 'tts:start', 'tts:sentence_start', 'tts:stop'], `framing v${v}`);
      assert.equal(events[0]!.transport, 'websocket');
      assert.ok(typeof events[1]!.text === 'string' && (events[1]!.text as string).length > 0);
      // The reply's Opus packets, timed by their TOC, play as long as the reply's frame table says.
      const replies = [0, 1, 2, 3].map((n) => clip(`reply-${n}`).packets.length * 60);
      assert.ok(replies.includes(replyMs), `reply of ${replyMs} ms is one of ${replies}`);
    }
  });

  it('waits for voice on a listening channel (a microphone streaming silence gets no reply), and closes it after its no-voice time', async () => {
    const s = await startVoiceServer({ port: 0, sttMs: 20, llmMs: 20, ttsMs: 20, xiaozhiNoVoiceMs: 1500 });
    servers.push(s);
    const utt = clip('utterance');
    const ws = new WebSocket(`${s.wsUrl}/xiaozhi/v1/`, { headers: { 'Device-Id': '02:00:00:00:00:02', 'Protocol-Version': '1' } });
    const texts: Record<string, unknown>[] = [];
    ws.on('message', (d, bin) => !bin && texts.push(JSON.parse(d.toString())));
    await new Promise((r) => ws.on('open', r));
    const opened = Date.now();
    ws.send(JSON.stringify({ type: 'hello', version: 1, transport: 'websocket', audio_params: { format: 'opus', sample_rate: 16000, channels: 1, frame_duration: 60 } }));
    ws.send(JSON.stringify({ type: 'listen', state: 'start', mode: 'auto' }));
    // Silence only, in real time, until the server gives up on the channel.
    const mic = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send(utt.silence), 60);
    const [code, reason] = await new Promise<[number, string]>((r) => ws.on('close', (c, why) => r([c, why.toString()])));
    clearInterval(mic);
    const after = Date.now() - opened;
    assert.deepEqual([code, reason], [1000, 'no voice']);
    assert.ok(after >= 1400 && after < 4000, `closed after ${after} ms`);
    assert.deepEqual(texts.map((m) => m.type), ['hello'], 'nothing said to silence: no stt, no tts');
  });

  it('closes a channel that breaks the protocol, and refuses an upgrade without a device id', async () => {
    const s = await startVoiceServer({ port: 0 });
    servers.push(s);
    const closeOf = (first: string | Buffer, headers: Record<string, string> = { 'Device-Id': 'aa:bb' }) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(`${s.wsUrl}/xiaozhi/v1/`, { headers });
        ws.on('open', () => ws.send(first));
        ws.on('close', (code) => resolve(code));
        ws.on('error', () => resolve(-1));
        ws.on('unexpected-response', (_q, res) => resolve(res.statusCode ?? 0));
      });
    assert.equal(await closeOf('{"type":"listen","state":"start"}'), 1008, 'listen before hello');
    assert.equal(await closeOf(Buffer.from([0xfc, 1, 2])), 1008, 'audio before hello');
    assert.equal(await closeOf('not json'), 1008);
    assert.equal(await closeOf('{"type":"hello","transport":"mqtt"}'), 1008);
    assert.equal(await closeOf('{}', {}), 404, 'no Device-Id');
    assert.equal(await closeOf('{}', { 'Device-Id': 'aa', 'Protocol-Version': '9' }), 404, 'an unknown binary protocol version');
    // The server lives on: a well-behaved channel still converses.
    const { events } = await xiaozhiConversation(s, '1');
    assert.equal(events.at(-1)!.state, 'stop');
  });
});

describe('k6 devices in two dialects', () => {
  // An endpointing window other than the server's default: the device knows nothing of it and must measure it.
  const delays = { vad: 240, stt: 60, llm: 40, tts: 30 };
  it('a mixed fleet of wakestorm PCM and xiaozhi Opus devices passes, each measuring the injected pipeline delay; barging devices of both dialects see the server stop at once', async () => {
    // Two more profiles, one per dialect, that interrupt every reply 300 ms in (the dialect's abort).
    const { PROFILES } = await import('../../core/profiles.ts');
    const barge = ['recommended', 'xiaozhi-esp32'].map((name) => {
      const f = join(results, `${name}-barge.json`);
      writeFileSync(f, JSON.stringify({ ...PROFILES[name]!, name: `${name}-barge`, barge_in_ms: 300 }));
      return `${f}:1`;
    });
    const r = await runCli(
      ['run', 'smoke', '--profile', ['recommended:1', 'xiaozhi-esp32:1', ...barge].join(','), '--devices', '12', '--duration', '24s', '--wake', 'poisson:4s', '--results', results, ...serverArgs(delays)],
      { timeoutMs: 150_000 },
    );
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const dir = join(results, readlinkSync(join(results, 'latest')));
    const m = JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8')).metrics;
    // Voice-to-voice: the user's last voiced frame to the first reply audio, the server's endpointing included (240 ms
    // is a whole number of both dialects' frames, 20 ms PCM and 60 ms Opus), within 3 ms of the injected truth.
    assertVoiceToVoice(m, ['recommended', 'xiaozhi-esp32'], delays);
    assert.equal(m.wake_success.values.rate, 1);
    assert.ok(m['wake_ack_latency{chaos:steady,profile:xiaozhi-esp32}'].values.count >= 3, 'xiaozhi wakes acknowledged by the channel handshake');
    // A per-wake channel is a connect per conversation: connect and handshake times are measured every wake.
    assert.ok(m.connect_time.values.count >= m['wake_ack_latency{chaos:steady,profile:xiaozhi-esp32}'].values.count);
    assert.ok(m.handshake_time.values.count > 0);
    // Back to listening after each reply (auto mode): the next turn on an open channel is the user speaking again.
    assert.ok((m.follow_ups?.values.count ?? 0) >= 1, 'follow-up turns on a listening channel (only xiaozhi profiles listen on)');
    assert.equal(m.unplanned_drops?.values.count ?? 0, 0);
    // Barge-in: every interruption measured; the server stops at the abort, so only what was already in flight (its
    // real-time lead) arrives after it; an interrupted reply is the user talking, not a dropped session.
    assert.ok(m.barge_ins.values.count >= 4, `${m.barge_ins.values.count} barge-ins`);
    assert.equal(m.barge_in_stop_time.values.count, m.barge_ins.values.count);
    assert.ok(m.barge_in_stop_time.values['p(95)'] < 500, `stale audio for ${m.barge_in_stop_time.values['p(95)']} ms`);
    assert.equal(m.sessions_dropped?.values.count ?? 0, 0, 'a barge-in is not a drop');
  });

  it('a cut mid-reply drops xiaozhi conversations (the dialect has no resume) and wakestorm ones resume', async () => {
    const timeline = join(results, 'cut-mid-reply.json');
    // Wakes at 1-2 s; 3 s of speech, the pipeline, then a 2 s reply streamed in real time: 5.5 s is mid-reply.
    writeFileSync(timeline, JSON.stringify([{ at: '5500ms', for: '1500ms', fault: 'cut' }]));
    const r = await runCli(
      ['run', 'smoke', '--profile', 'recommended:1,xiaozhi-esp32:1', '--devices', '8', '--duration', '16s', '--wake', 'once:1s-1500ms', '--timeline', timeline, '--results', results, '--server-arg', '--tts-pace=realtime'],
      { timeoutMs: 150_000 },
    );
    assert.ok(r.code === 0 || r.code === 99, r.stdout + r.stderr);
    const m = JSON.parse(readFileSync(join(results, readlinkSync(join(results, 'latest')), 'summary.json'), 'utf8')).metrics;
    assert.ok((m['sessions_dropped{reason:lost}']?.values.count ?? 0) >= 1, 'xiaozhi conversations cut mid-reply are lost');
    assert.ok((m.sessions_resumed?.values.count ?? 0) >= 1, 'wakestorm conversations resume after the cut');
  });
});

describe("the README's user dialect", () => {
  it('runs as written against a server that speaks it', async () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const m = /<!-- readme-dialect:[^>]*-->\s*```json\n([\s\S]*?)```/.exec(readme);
    assert.ok(m, 'the README marks its dialect example');
    assert.ok(m![1]!.trim().split('\n').length < 60, 'under 60 lines');
    const file = join(results, 'acme.json');
    writeFileSync(file, m![1]!);
    const key = join(results, 'acme-key.txt');
    writeFileSync(key, 'acme-key-1234\n', { mode: 0o600 });
    const acme = await startAcmeServer({ apiKey: 'acme-key-1234', thinkMs: 80 });
    try {
      const r = await runCli(['run', 'smoke', '--server-url', acme.url, '--dialect', file, '--token-file', key, '--devices', '4', '--duration', '11s', '--wake', 'once:1s-2s', '--results', results], { timeoutMs: 120_000 });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const s = JSON.parse(readFileSync(join(results, readlinkSync(join(results, 'latest')), 'summary.json'), 'utf8')).metrics;
      assert.equal(s.sessions_completed.values.count, 4);
      assert.equal(acme.finished(), 4, 'the server saw every conversation to its end');
      assert.ok(s.response_latency.values['p(50)'] >= 80, 'response latency includes the server think time');
      assert.ok(s.ping_rtt === undefined || s.ping_rtt.values.count >= 0);
    } finally {
      await acme.close();
    }
  });
});
