// The reference server against real `ws` clients on loopback: every row of docs/protocol.md.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import WebSocket from 'ws';
import { CLOSE } from '../../core/protocol.ts';
import type { ServerConfig } from '../../server/config.ts';
import { startVoiceServer, type VoiceServer } from '../../server/server.ts';
import { ProtocolClient, UTTERANCE, connectDevice, upgradeStatus } from '../../scripts/protocol-client.ts';
import { metricValue } from '../../scripts/proc-sampler.ts';

const servers: VoiceServer[] = [];
after(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

async function server(overrides: Partial<ServerConfig> = {}): Promise<VoiceServer> {
  const s = await startVoiceServer({ port: 0, sttMs: 20, llmMs: 20, ttsMs: 20, ttsPace: 'burst', ...overrides });
  servers.push(s);
  return s;
}

const SILENCE_1S = Buffer.alloc(32000);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function metrics(s: VoiceServer): Promise<string> {
  return (await fetch(`${s.httpUrl}/metrics`)).text();
}

/** Wakes, speaks the utterance and ends speech; returns the session id. */
async function speak(c: ProtocolClient, wake = 'w-1', endOfSpeech = true): Promise<string> {
  c.send({ type: 'hotword_detected', wake_id: wake, t: Date.now() });
  const started = await c.next('session_started');
  assert.equal(started.wake_id, wake);
  c.sendAudio(UTTERANCE);
  if (endOfSpeech) c.send({ type: 'end_of_speech', session_id: started.session_id });
  return started.session_id;
}

describe('transport and identity', () => {
  it('path-identified devices get connected at once, with every field', async () => {
    const s = await server({ keepaliveMs: 7000 });
    const { c, connected } = await connectDevice(s.wsUrl, 'dev-path');
    assert.equal(connected.status, 'connected');
    assert.equal(connected.client_id, 'dev-path');
    assert.match(connected.connection_id, /^c-/);
    assert.ok(connected.resume_token.length >= 16);
    assert.equal(connected.keepalive_ms, 7000);
    assert.ok(Math.abs(connected.server_time - Date.now()) < 2000);
    assert.equal(connected.resumed, false);
    assert.equal(connected.session, null);
    c.close();
  });

  it('hello-identified devices get connected after hello; a hello on a path connection is bad_message', async () => {
    const s = await server();
    const c = new ProtocolClient(`${s.wsUrl}/ws`);
    await c.opened;
    await sleep(50);
    assert.equal(c.messages.length, 0, 'nothing before hello');
    c.send({
      type: 'hello',
      device_id: 'dev-h',
      protocol: 1,
      profile: 'esp32-hotpin',
      audio: { encoding: 'pcm_s16le', sample_rate: 16000, channels: 1 },
    });
    const connected = await c.next('connected');
    assert.equal(connected.client_id, 'dev-h');
    c.send({ type: 'hello', device_id: 'dev-h', protocol: 1 });
    assert.equal((await c.next('error')).code, 'bad_message');
    c.close();
    const { c: p } = await connectDevice(s.wsUrl, 'dev-p');
    p.send({ type: 'hello', device_id: 'dev-p', protocol: 1 });
    assert.equal((await p.next('error')).code, 'bad_message');
    p.close();
  });

  it('closes /ws with 4408 without a hello in time, and 1002 for binary or another message first', async () => {
    const s = await server({ helloTimeoutMs: 150 });
    const a = new ProtocolClient(`${s.wsUrl}/ws`);
    assert.equal(await a.waitClose(), CLOSE.TIMEOUT);
    const b = new ProtocolClient(`${s.wsUrl}/ws`);
    await b.opened;
    b.ws.send(Buffer.alloc(640));
    assert.equal(await b.waitClose(), CLOSE.PROTOCOL_ERROR);
    const d = new ProtocolClient(`${s.wsUrl}/ws`);
    await d.opened;
    d.send({ type: 'ping', id: 1 });
    assert.equal(await d.waitClose(), CLOSE.PROTOCOL_ERROR);
  });

  it('answers 404 to other paths and bad device ids, without upgrading', async () => {
    const s = await server();
    assert.equal(await upgradeStatus(`${s.wsUrl}/other`), 404);
    assert.equal(await upgradeStatus(`${s.wsUrl}/ws/bad%20id`), 404);
    assert.equal(await upgradeStatus(`${s.wsUrl}/ws/${'x'.repeat(65)}`), 404);
    assert.equal(await upgradeStatus(`${s.wsUrl}/ws/a/b`), 404);
    assert.equal(await upgradeStatus(`${s.wsUrl}/ws/ok-id_1.2`), 101);
    assert.equal((await fetch(`${s.httpUrl}/nope`)).status, 404);
  });

  it('refuses a missing or wrong token with 401 before the upgrade; accepts Bearer and ?token=', async () => {
    const s = await server({ tokens: ['secret-token-1'] });
    assert.equal(await upgradeStatus(`${s.wsUrl}/ws/d1`), 401);
    assert.equal(await upgradeStatus(`${s.wsUrl}/ws/d1`, { authorization: 'Bearer wrong-token' }), 401);
    assert.equal(await upgradeStatus(`${s.wsUrl}/ws/d1?token=nope`), 401);
    assert.equal(await upgradeStatus(`${s.wsUrl}/ws/d1`, { authorization: 'Bearer secret-token-1' }), 101);
    assert.equal(await upgradeStatus(`${s.wsUrl}/ws/d1?token=secret-token-1`), 101);
    const res = await fetch(`${s.httpUrl}/ws/d1`, { headers: { connection: 'Upgrade', upgrade: 'websocket' } }).catch(
      () => null,
    );
    if (res) assert.doesNotMatch(await res.text(), /secret|wakestorm|node/i);
  });

  it('replaces an older connection of the same device with 4409', async () => {
    const s = await server();
    const { c: first } = await connectDevice(s.wsUrl, 'dup');
    const { c: second } = await connectDevice(s.wsUrl, 'dup');
    assert.equal(await first.waitClose(), CLOSE.REPLACED);
    assert.equal(first.closeReason, 'replaced');
    second.send({ type: 'ping', id: 1 });
    assert.equal((await second.next('pong')).id, 1);
    second.close();
  });

  it('closes with 1013 at max_connections', async () => {
    const s = await server({ maxConnections: 2 });
    const a = await connectDevice(s.wsUrl, 'm1');
    const b = await connectDevice(s.wsUrl, 'm2');
    const c = new ProtocolClient(`${s.wsUrl}/ws/m3`);
    assert.equal(await c.waitClose(), CLOSE.TRY_AGAIN_LATER);
    a.c.close();
    b.c.close();
  });
});

describe('liveness', () => {
  it('sends JSON and frame pings at the keepalive cadence; answers device pings at once', async () => {
    const s = await server({ keepaliveMs: 150 });
    const { c } = await connectDevice(s.wsUrl, 'ka');
    let framePings = 0;
    c.ws.on('ping', () => framePings++);
    const t0 = Date.now();
    await c.next('ping');
    await c.next('ping');
    const elapsed = Date.now() - t0;
    assert.ok(elapsed >= 250 && elapsed < 1000, `two pings took ${elapsed} ms`);
    assert.ok(framePings >= 2, `frame pings: ${framePings}`);
    c.send({ type: 'ping', id: 7, t: 12345 });
    const pong = await c.next('pong');
    assert.deepEqual(pong, { type: 'pong', id: 7, t: 12345 });
    c.close();
  });

  it('closes a connection it hears nothing from with 4408 idle, but not one that answers', async () => {
    const s = await server({ keepaliveMs: 100, idleTimeoutMs: 350 });
    const silent = new ProtocolClient(`${s.wsUrl}/ws/silent`, { autoPong: false });
    const alive = new ProtocolClient(`${s.wsUrl}/ws/alive`);
    const t0 = Date.now();
    assert.equal(await silent.waitClose(), CLOSE.TIMEOUT);
    assert.equal(silent.closeReason, 'idle');
    assert.ok(Date.now() - t0 >= 300);
    await sleep(300);
    assert.equal(alive.closeCode, null, 'a device that pongs stays');
    alive.close();
  });
});

describe('voice sessions', () => {
  it('runs wake → audio → end_of_speech → transcript → reply → TTS → playback_complete → complete', async () => {
    const s = await server({ sttMs: 60, llmMs: 40, ttsMs: 30 });
    const { c } = await connectDevice(s.wsUrl, 'v1');
    const sid = await speak(c, 'w-a', false);
    const tEnd = Date.now();
    c.send({ type: 'end_of_speech', session_id: sid });
    const tr = await c.next('transcript');
    assert.equal(tr.session_id, sid);
    assert.ok(tr.text.length > 3);
    const llm = await c.next('llm_response');
    assert.ok(llm.text.length > 3);
    const start = await c.next('tts_stream_start');
    const firstByte = Date.now() - tEnd;
    assert.ok(firstByte >= 125, `first TTS after ${firstByte} ms, configured 130`);
    assert.equal(start.sample_rate, 16000);
    const end = await c.next('tts_stream_end');
    assert.equal(end.bytes, start.bytes);
    assert.equal(c.binaryBytes, start.bytes, 'every TTS byte arrived');
    assert.equal(end.chunks, c.binaryFrames);
    assert.ok(start.bytes / end.chunks <= 4096);
    c.send({ type: 'playback_complete', session_id: sid });
    const done = await c.next('session_end');
    assert.deepEqual(done, { type: 'session_end', session_id: sid, reason: 'complete' });
    assert.equal(metricValue(await metrics(s), 'voice_sessions_total', 'outcome="complete"'), 1);
    c.close();
  });

  it('streams TTS at real-time pace when told to', async () => {
    const s = await server({ ttsPace: 'realtime', sttMs: 0, llmMs: 0, ttsMs: 0 });
    const { c } = await connectDevice(s.wsUrl, 'rt');
    await speak(c);
    const start = await c.next('tts_stream_start');
    const t0 = Date.now();
    await c.next('tts_stream_end', 6000);
    const took = Date.now() - t0;
    const audioMs = start.bytes / 32;
    assert.ok(took > audioMs - 400 && took < audioMs + 500, `stream of ${audioMs} ms audio took ${took} ms`);
    c.close();
  });

  it('ends speech by energy VAD after its window of silence (--vad-silence-ms), without end_of_speech', async () => {
    // A window longer than the utterance's own 320 ms of trailing silence: the speech goes on until more silence comes.
    const s = await server({ vadSilenceMs: 700 });
    const { c } = await connectDevice(s.wsUrl, 'vad');
    await speak(c, 'w-v', false);
    await sleep(200);
    assert.equal(
      c.messages.filter((m) => m.type === 'transcript').length,
      0,
      'speech with short pauses does not end it',
    );
    c.sendAudio(SILENCE_1S);
    await c.next('transcript');
    // Audio after the VAD decided is dropped silently.
    c.sendAudio(UTTERANCE.subarray(0, 6400));
    await c.next('tts_stream_end');
    assert.equal(c.messages.filter((m) => m.type === 'error').length, 0);
    c.close();
  });

  it('barges in: a wake during a session ends it barged_in and starts another', async () => {
    const s = await server({ sttMs: 500 });
    const { c } = await connectDevice(s.wsUrl, 'barge');
    const first = await speak(c, 'w-1');
    c.send({ type: 'hotword_detected', wake_id: 'w-2' });
    const end = await c.next('session_end');
    assert.equal(end.session_id, first);
    assert.equal(end.reason, 'barged_in');
    const second = await c.next('session_started');
    assert.equal(second.wake_id, 'w-2');
    assert.notEqual(second.session_id, first);
    c.close();
  });

  it('cancels on request, and times out a session with no audio', async () => {
    const s = await server({ noAudioTimeoutMs: 200 });
    const { c } = await connectDevice(s.wsUrl, 'cx');
    const sid = await speak(c, 'w-c');
    c.send({ type: 'cancel', session_id: sid });
    assert.equal((await c.next('session_end')).reason, 'cancelled');
    c.send({ type: 'hotword_detected', wake_id: 'w-t' });
    await c.next('session_started');
    const t0 = Date.now();
    assert.equal((await c.next('session_end')).reason, 'timeout');
    assert.ok(Date.now() - t0 >= 150);
    const m = await metrics(s);
    assert.equal(metricValue(m, 'voice_sessions_total', 'outcome="cancelled"'), 1);
    assert.equal(metricValue(m, 'voice_sessions_total', 'outcome="timeout"'), 1);
    c.close();
  });
});

describe('resume', () => {
  it('replays the whole reply when cut while speaking, then ends normally', async () => {
    const s = await server({ ttsPace: 'realtime' });
    const { c, connected } = await connectDevice(s.wsUrl, 'rs');
    const sid = await speak(c);
    await c.next('tts_stream_start');
    await sleep(150);
    c.close();
    await sleep(50);
    const { c: c2, connected: again } = await connectDevice(s.wsUrl, 'rs', `?resume=${connected.resume_token}`);
    assert.equal(again.resumed, true);
    assert.deepEqual(again.session, { session_id: sid, stage: 'speaking' });
    assert.equal((await c2.next('transcript')).session_id, sid);
    assert.equal((await c2.next('llm_response')).session_id, sid);
    const start = await c2.next('tts_stream_start');
    await c2.next('tts_stream_end', 6000);
    assert.equal(c2.binaryBytes, start.bytes, 'the stream starts over from the first byte');
    c2.send({ type: 'playback_complete', session_id: sid });
    assert.equal((await c2.next('session_end')).reason, 'complete');
    assert.equal(metricValue(await metrics(s), 'voice_resumes_total', 'result="hit"'), 1);
    c2.close();
  });

  it('resumes on /ws through hello.resume while thinking, and the reply still comes', async () => {
    const s = await server({ sttMs: 300 });
    const a = new ProtocolClient(`${s.wsUrl}/ws`);
    await a.opened;
    a.send({ type: 'hello', device_id: 'hr', protocol: 1 });
    const first = await a.next('connected');
    const sid = await speak(a);
    await sleep(50);
    a.close();
    const b = new ProtocolClient(`${s.wsUrl}/ws`);
    await b.opened;
    b.send({ type: 'hello', device_id: 'hr', protocol: 1, resume: first.resume_token });
    const again = await b.next('connected');
    assert.equal(again.resumed, true);
    assert.deepEqual(again.session, { session_id: sid, stage: 'thinking' });
    await b.next('transcript');
    await b.next('tts_stream_end');
    b.send({ type: 'playback_complete', session_id: sid });
    assert.equal((await b.next('session_end')).reason, 'complete');
    b.close();
  });

  it('ends the session interrupted when cut while the user was still speaking', async () => {
    // The utterance ends in 320 ms of silence: a window longer than that keeps the user speaking when the cut comes.
    const s = await server({ vadSilenceMs: 700 });
    const { c, connected } = await connectDevice(s.wsUrl, 'ri');
    const sid = await speak(c, 'w-i', false);
    c.close();
    await sleep(50);
    const { c: c2, connected: again } = await connectDevice(s.wsUrl, 'ri', `?resume=${connected.resume_token}`);
    assert.equal(again.resumed, true);
    assert.deepEqual(again.session, { session_id: sid, stage: 'listening' });
    const end = await c2.next('session_end');
    assert.equal(end.reason, 'interrupted');
    assert.equal(metricValue(await metrics(s), 'voice_sessions_total', 'outcome="interrupted"'), 1);
    c2.close();
  });

  it('answers resumed:false to an unknown or expired token, and counts the lost session', async () => {
    const s = await server({ resumeGraceMs: 150, sttMs: 1000 });
    const { c, connected } = await connectDevice(s.wsUrl, 're');
    await speak(c);
    c.close();
    await sleep(400);
    const { c: c2, connected: again } = await connectDevice(s.wsUrl, 're', `?resume=${connected.resume_token}`);
    assert.equal(again.resumed, false);
    assert.equal(again.session, null);
    assert.notEqual(again.resume_token, connected.resume_token);
    const { c: c3, connected: unknown } = await connectDevice(s.wsUrl, 'other', '?resume=not-a-token');
    assert.equal(unknown.resumed, false);
    const m = await metrics(s);
    assert.equal(metricValue(m, 'voice_resumes_total', 'result="miss"'), 2);
    assert.equal(metricValue(m, 'voice_sessions_total', 'outcome="lost"'), 1);
    c2.close();
    c3.close();
  });
});

describe('errors and limits', () => {
  it('answers each recoverable fault with its error code and keeps the connection', async () => {
    const s = await server();
    const { c } = await connectDevice(s.wsUrl, 'err');
    const cases: [string | Buffer, string][] = [
      ['{not json', 'bad_json'],
      ['{"type":"dance"}', 'unknown_type'],
      ['[1,2]', 'bad_message'],
      ['{"type":7}', 'bad_message'],
      ['{"type":"hotword_detected"}', 'bad_message'],
      ['{"type":"ping","id":{"x":1}}', 'bad_message'],
      ['{"type":"end_of_speech","session_id":"s-none"}', 'no_session'],
      [Buffer.alloc(640), 'no_session'],
      [Buffer.alloc(641), 'bad_audio'],
      [Buffer.alloc(16386), 'bad_audio'],
    ];
    for (const [frame, code] of cases.slice(0, 9)) {
      c.ws.send(frame);
      const e = await c.next('error');
      assert.equal(e.code, code, `for ${String(frame).slice(0, 40)}`);
      assert.ok(e.message.length > 0);
    }
    // A valid message in between resets the run of errors.
    c.send({ type: 'ping', id: 1 });
    await c.next('pong');
    c.ws.send(cases[9]![0]);
    assert.equal((await c.next('error')).code, 'bad_audio');
    assert.equal(c.closeCode, null);
    const m = await metrics(s);
    assert.equal(metricValue(m, 'voice_errors_total', 'code="bad_audio"'), 2);
    c.close();
  });

  it('closes with 1008 after ten errors in a row', async () => {
    const s = await server();
    const { c } = await connectDevice(s.wsUrl, 'storm');
    for (let i = 0; i < 12; i++) c.ws.send('nope');
    assert.equal(await c.waitClose(), CLOSE.POLICY);
    assert.equal(c.messages.filter((m) => m.type === 'error').length, 10);
  });

  it('rate-limits a flood of messages, then closes it with 1008', async () => {
    const s = await server();
    const { c } = await connectDevice(s.wsUrl, 'flood');
    for (let i = 0; i < 500; i++) c.send({ type: 'ping', id: i });
    assert.equal(await c.waitClose(), CLOSE.POLICY);
    assert.ok(c.messages.some((m) => m.type === 'error' && m.code === 'rate_limited'));
    assert.ok(c.messages.filter((m) => m.type === 'pong').length < 100);
  });

  it('closes with 1009 for a frame over 64 KiB', async () => {
    const s = await server();
    const { c } = await connectDevice(s.wsUrl, 'big');
    c.ws.send(JSON.stringify({ type: 'ping', pad: 'x'.repeat(70 * 1024) }));
    assert.equal(await c.waitClose(), CLOSE.TOO_BIG);
  });

  it('cuts a device that stops reading while TTS streams, instead of buffering without bound', async () => {
    const s = await server({
      maxBufferedBytes: 64 * 1024,
      sttMs: 0,
      llmMs: 0,
      ttsMs: 0,
      audioBurstBytes: 1 << 30,
      audioRateBytesPerS: 1 << 30,
      textBurst: 1e6,
      textRatePerS: 1e6,
    });
    const { c } = await connectDevice(s.wsUrl, 'slow');
    (c.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    // Each wake with speech makes the server burst a ~90 KB reply at a reader that takes nothing.
    for (let i = 0; i < 400 && c.closeCode === null; i++) {
      c.send({ type: 'hotword_detected', wake_id: `w-${i}` });
      await sleep(2);
      // 1 s of near-silence: the VAD ends the speech and the reply starts.
      c.ws.send(Buffer.alloc(16384, 1));
      c.ws.send(Buffer.alloc(16384, 1));
      await sleep(5);
      if (metricValue(await metrics(s), 'voice_slow_readers_cut_total') >= 1) break;
    }
    assert.equal(metricValue(await metrics(s), 'voice_slow_readers_cut_total'), 1);
    await sleep(100);
    assert.equal(s.connectionCount(), 0);
    c.close();
  });
});

describe('HTTP, robustness and drain', () => {
  it('reports /health and /metrics with every family', async () => {
    const s = await server();
    const { c } = await connectDevice(s.wsUrl, 'h1');
    const h = (await (await fetch(`${s.httpUrl}/health`)).json()) as Record<string, unknown>;
    assert.equal(h.status, 'ok');
    assert.equal(h.connections, 1);
    assert.equal(h.sessions, 0);
    assert.equal(h.draining, false);
    assert.equal(typeof h.uptime_s, 'number');
    const m = await metrics(s);
    for (const name of [
      'voice_connections',
      'voice_connections_opened_total',
      'voice_connections_closed_total',
      'voice_sessions_total',
      'voice_resumes_total',
      'voice_messages_total',
      'voice_bytes_total',
      'voice_event_loop_lag_p99_seconds',
    ]) {
      assert.match(m, new RegExp(`^# TYPE ${name} `, 'm'), name);
    }
    assert.equal(metricValue(m, 'voice_connections'), 1);
    c.close();
  });

  it('survives a thousand connect/disconnect cycles without leaking connections', async () => {
    const s = await server({ resumeGraceMs: 0 });
    for (let round = 0; round < 10; round++) {
      await Promise.all(
        Array.from({ length: 100 }, async (_, i) => {
          const { c } = await connectDevice(s.wsUrl, `cyc-${round}-${i}`);
          if (i % 2) c.close();
          else c.ws.close(1000);
          await c.closed;
        }),
      );
    }
    await sleep(100);
    assert.equal(s.connectionCount(), 0);
    const m = await metrics(s);
    assert.equal(metricValue(m, 'voice_connections_opened_total'), 1000);
    assert.equal(metricValue(m, 'voice_connections'), 0);
  });

  it('drains on request: /health 503, idle devices get 1012 at once, an active reply finishes first', async () => {
    const s = await startVoiceServer({ port: 0, sttMs: 200, llmMs: 0, ttsMs: 0, ttsPace: 'burst', drainMs: 3000 });
    const { c: idle } = await connectDevice(s.wsUrl, 'idle');
    const { c: busy } = await connectDevice(s.wsUrl, 'busy');
    const sid = await speak(busy);
    const drained = s.drain();
    assert.equal(await idle.waitClose(), CLOSE.SERVICE_RESTART);
    const h = await fetch(`${s.httpUrl}/health`);
    assert.equal(h.status, 503);
    assert.equal(((await h.json()) as { status: string }).status, 'draining');
    assert.equal(await upgradeStatus(`${s.wsUrl}/ws/new`), 503);
    assert.equal(busy.closeCode, null, 'the device with a reply in flight stays');
    await busy.next('tts_stream_end');
    busy.send({ type: 'playback_complete', session_id: sid });
    assert.equal((await busy.next('session_end')).reason, 'complete');
    assert.equal(await busy.waitClose(), CLOSE.SERVICE_RESTART);
    await drained;
    await assert.rejects(fetch(`${s.httpUrl}/health`), 'nothing listens after the drain');
  });

  it('ignores a hostile client sending garbage JSON shapes without crashing', async () => {
    const s = await server();
    const { c } = await connectDevice(s.wsUrl, 'hostile');
    const shapes = [
      'null',
      '1',
      '"x"',
      '{"type":null}',
      '{"type":"cancel","session_id":5}',
      '{"type":"playback_complete"}',
      '{"type":"hotword_detected","wake_id":""}',
    ];
    for (const sh of shapes) {
      c.ws.send(sh);
      await c.next('error');
      c.send({ type: 'ping' });
      await c.next('pong');
    }
    const ok = new WebSocket(`${s.wsUrl}/ws/after`);
    await new Promise((r) => ok.once('open', r));
    ok.terminate();
    c.close();
  });
});
