// Dialects as data: validation names the field, templates and matchers do what the README says, binary framings
// round-trip, Opus packets are timed by their TOC, and a xiaozhi device (a channel per wake) runs under a fake clock.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import {
  answerOf,
  renderAnswer,
  capture,
  DialectError,
  fill,
  frameAudio,
  matches,
  render,
  stepOf,
  unframeAudio,
  validateDialect,
} from '../../core/dialect.ts';
import { Device } from '../../core/device.ts';
import { deviceVars } from '../../core/device-env.ts';
import { VARIABLES } from '../../core/variables.ts';
import { opusClip, opusPacketMs, type OpusTable } from '../../core/opus.ts';
import { PROFILES, type Profile } from '../../core/profiles.ts';
import { nodeDialect } from '../../scripts/node-devices.ts';
import { fakeEnv } from '../helpers/fake-env.ts';

/** A dialect as loose JSON, to break on purpose. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests edit arbitrary fields of a valid dialect
type Loose = Record<string, any>;

const wakestorm = nodeDialect('wakestorm');
// These tests are about the channel: the OTA check before it has its trace (core/traces/xiaozhi-ota-check.json).
const xiaozhi = { ...nodeDialect('xiaozhi'), provision: null };
const raw = () => JSON.parse(JSON.stringify(wakestorm)) as Loose;

describe('dialect variables', () => {
  it('a device fills what its dialect declares and nothing else', () => {
    const ws = deviceVars('d-1', PROFILES.recommended!, wakestorm);
    assert.deepEqual(Object.keys(ws).sort(), ['device_id', 'profile', 'protocol_version']);
    const xz = deviceVars('d-1', PROFILES['xiaozhi-esp32']!, xiaozhi);
    assert.deepEqual(Object.keys(xz).sort(), ['client_id', 'listen_mode', 'mac', 'wake_word']);
    assert.equal(xz.listen_mode, 'auto');
    // Every variable a dialect may declare is one the device fills (or one the run, link or conversation sets).
    const all = deviceVars('d-1', PROFILES.recommended!, { ...wakestorm, variables: Object.keys(VARIABLES) });
    for (const [name, v] of Object.entries(VARIABLES)) {
      if (v.from === 'device') assert.ok(all[name] !== undefined, `${name} is declared as the device's but not filled`);
    }
  });
});

describe('dialect validation', () => {
  it('accepts the shipped dialects and names what is wrong in a broken one', () => {
    assert.equal(wakestorm.lifecycle, 'persistent');
    assert.equal(xiaozhi.lifecycle, 'per_wake');
    const broken = (edit: (d: Loose) => void, re: RegExp) => {
      const d = raw();
      edit(d);
      assert.throws(
        () => validateDialect(d, 'x'),
        (e: Error) => e instanceof DialectError && re.test(e.message) && !e.message.includes('\n'),
      );
    };
    broken((d) => (d.send.wake[0].wake_id = '{wakeid}'), /x\.send\.wake\[0\]\.wake_id: unknown placeholder \{wakeid\}/);
    broken((d) => (d.audio.up.framing = 'gzip'), /x\.audio\.up\.framing: must be one of raw, xiaozhi-v2, xiaozhi-v3/);
    broken((d) => (d.recv.ack = 'ready'), /needs lifecycle "per_wake"/);
    broken((d) => ((d.connect.identify = 'hello'), (d.send.hello = null)), /send\.hello: is needed/);
    broken((d) => (d.extra = 1), /x\.extra: is not a dialect field/);
    // Variables: declared, each one a device fills, and nothing used that is not declared.
    broken((d) => delete d.variables, /x\.variables: must list the variables the dialect uses/);
    broken((d) => d.variables.push('flux'), /x\.variables: declares \{flux\}, which no device fills/);
    broken((d) => d.variables.push('resume_token'), /x\.variables: \{resume_token\} comes from capture\.ready/);
    broken(
      (d) => (d.variables = d.variables.filter((v: string) => v !== 'token')),
      /x\.connect\.headers\.Authorization: uses \{token\}, which the dialect's variables do not declare: add it/,
    );
    broken((d) => delete d.recv.reply_end, /recv\.reply_end: must be a matcher/);
    broken(
      (d) => (d.send.wake = []),
      /send\.wake: must be a list of message templates, empty only when recv\.ack is null/,
    );
    broken((d) => (d.connect.path = '/ws/{device_id'), /brace that is not a \{placeholder\}/);
    // Audio: PCM at the usual voice-API rates, µ-law at 8 kHz, base64 in JSON with its message (up) or field (down).
    broken(
      (d) => (d.audio.up = { codec: 'pcm_s16le', framing: 'raw', sample_rate: 22050 }),
      /audio\.up\.sample_rate: must be one of 8000, 16000, 24000, 48000 for pcm_s16le/,
    );
    broken(
      (d) => (d.audio.up = { codec: 'mulaw', framing: 'raw', sample_rate: 16000 }),
      /audio\.up\.sample_rate: must be one of 8000 for mulaw/,
    );
    broken(
      (d) => (d.audio.up = { codec: 'opus', framing: 'json', sample_rate: 16000, message: { audio: '{audio}' } }),
      /audio\.up\.codec: opus rides in binary frames only/,
    );
    broken(
      (d) => (d.audio.up = { codec: 'pcm_s16le', framing: 'json', sample_rate: 24000, message: { a: 'x' } }),
      /audio\.up\.message: must hold the string "\{audio\}" \(the frame in base64\) exactly once/,
    );
    broken(
      (d) => (d.audio.down = { codec: 'pcm_s16le', framing: 'json', sample_rate: 24000, match: { type: 'a' } }),
      /audio\.down\.field: must be the field path of the base64 audio/,
    );
    broken(
      (d) => (d.audio.down = { codec: 'pcm_s16le', framing: 'raw', sample_rate: 24000, field: 'x' }),
      /audio\.down\.field: is not a field here/,
    );
    // A matcher on a variable not set yet would match anything: refused with its path.
    broken(
      (d) => (d.recv.ack = { type: 'session_started', session_id: '{session_id}' }),
      /x\.recv\.ack\.session_id: matches \{session_id\}, which the device has not set when the wake is acknowledged/,
    );
    broken((d) => (d.recv.ready = { type: 'connected', w: '{wake_id}' }), /x\.recv\.ready\.w: matches \{wake_id\}/);
    // Steps a server does not have are null; a null step captures nothing.
    broken((d) => (d.recv.ready = null), /x\.capture\.ready: captures from recv\.ready, which is null/);
    // Answers: their placeholders are the dialect's variables and the answer's own captures, nothing else.
    const answer = { match: { type: 'rpc' }, capture: { rpc_id: 'id' }, send: { id: '{rpc_id}', ok: true } };
    broken(
      (d) => (d.answer = [{ ...answer, send: { id: '{rpc}' } }]),
      /x\.answer\[0\]\.send\.id: unknown placeholder \{rpc\}/,
    );
    broken((d) => (d.answer = [{ ...answer, capture: { 'Bad-Name': 'id' } }]), /x\.answer\[0\]\.capture\.Bad-Name/);
    broken((d) => (d.answer = [{ ...answer, match: {} }]), /x\.answer\[0\]\.match: must be a matcher/);
    broken((d) => (d.answer = [{ ...answer, reply: 1 }]), /x\.answer\[0\]\.reply: is not a field/);
    const d = raw();
    d.answer = [answer];
    const ok = validateDialect(d, 'x');
    // The request's id is echoed with its type; the capture does not touch the device's own variables.
    const vars = { device_id: 'd1' };
    const a = answerOf(ok, { type: 'rpc', id: 7 }, vars)!;
    assert.equal(renderAnswer(a, { type: 'rpc', id: 7 }, vars), '{"id":7,"ok":true}');
    assert.deepEqual(vars, { device_id: 'd1' });
    assert.equal(answerOf(ok, { type: 'other' }, vars), null);
    assert.throws(() => validateDialect([], 'y'), /dialect y: must be a JSON object/);
  });
});

describe('templates, matchers, captures', () => {
  it('fill a template keeping types, leave unset fields out, and match with variables', () => {
    const t = {
      type: 'ping',
      id: '{ping_id}',
      note: 'dev {device_id}!',
      resume: '{resume_token}',
      nested: { a: ['{ping_id}'] },
    };
    assert.deepEqual(JSON.parse(render(t, { ping_id: 7, device_id: 'd1' })), {
      type: 'ping',
      id: 7,
      note: 'dev d1!',
      nested: { a: [7] },
    });
    assert.equal(fill('/ws/{device_id}', { device_id: 'a b' }, encodeURIComponent), '/ws/a%20b');
    assert.equal(fill('Bearer {token}', {}), undefined);
    const m = { type: 'tts_stream_end', session_id: '{session_id}', 'session.stage': 'speaking' };
    assert.ok(
      matches(m, { type: 'tts_stream_end', session_id: 's1', session: { stage: 'speaking' } }, { session_id: 's1' }),
    );
    assert.ok(
      !matches(m, { type: 'tts_stream_end', session_id: 's2', session: { stage: 'speaking' } }, { session_id: 's1' }),
    );
    assert.ok(!matches(m, { type: 'tts_stream_end', session_id: 's1' }, { session_id: 's1' }));
  });

  it('capture from one message alone: a field it lacks unsets its variable, objects are kept as JSON', () => {
    const c = { resume_token: 'resume_token', stage: 'session.stage', session: 'session' };
    const vars: Record<string, string | number | boolean | null | undefined> = {};
    capture(c, { resume_token: 'r1', session: { stage: 'thinking' } }, vars);
    assert.deepEqual(vars, { resume_token: 'r1', stage: 'thinking', session: '{"stage":"thinking"}' });
    capture(c, { type: 'connected' }, vars);
    assert.deepEqual(vars, { resume_token: undefined, stage: undefined, session: undefined });
  });
});

describe('binary framing and Opus timing', () => {
  it('round-trips xiaozhi BinaryProtocol2 and 3, and refuses a header that lies', () => {
    const payload = new Uint8Array([1, 2, 3, 4, 5]);
    for (const f of ['raw', 'xiaozhi-v2', 'xiaozhi-v3'] as const) {
      const framed = new Uint8Array(frameAudio(f, payload, 1234));
      assert.deepEqual([...unframeAudio(f, framed)!], [...payload], f);
    }
    const v2 = new DataView(frameAudio('xiaozhi-v2', payload, 1234));
    assert.equal(v2.getUint16(0), 2, 'version, big-endian');
    assert.equal(v2.getUint32(8), 1234, 'timestamp');
    assert.equal(v2.getUint32(12), 5, 'payload size');
    const lying = new Uint8Array(frameAudio('xiaozhi-v3', payload, 0));
    new DataView(lying.buffer).setUint16(2, 500);
    assert.equal(unframeAudio('xiaozhi-v3', lying), null);
    assert.equal(unframeAudio('xiaozhi-v2', new Uint8Array(3)), null);
  });

  it('times every committed packet by its TOC: the utterance plays as long as its frame table says', () => {
    const b = readFileSync(new URL('../../audio/utterance.opus', import.meta.url));
    const table = JSON.parse(
      readFileSync(new URL('../../audio/utterance.opus.json', import.meta.url), 'utf8'),
    ) as OpusTable;
    const clip = opusClip(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer, table);
    assert.equal(
      clip.packets.reduce((a, p) => a + opusPacketMs(p), 0),
      table.sizes.length * 60,
    );
    assert.ok(clip.silent.some((s) => !s) && clip.silent.some((s) => s), 'speech and pauses');
    // Code 1 (two frames), code 3 (a count): CELT 20 ms frames (config 31).
    assert.equal(opusPacketMs(new Uint8Array([(31 << 3) | 1])), 40);
    assert.equal(opusPacketMs(new Uint8Array([(31 << 3) | 3, 3])), 60);
    assert.equal(opusPacketMs(new Uint8Array([(31 << 3) | 3, 9])), 0, 'more than 120 ms: malformed');
    assert.throws(() => opusClip(new ArrayBuffer(3), table), /does not match/);
  });
});

describe('a xiaozhi device', () => {
  const reply = (s: ReturnType<ReturnType<typeof fakeEnv>['last']>) => {
    s.msg({ session_id: 'S1', type: 'stt', text: 'hi' });
    s.msg({ session_id: 'S1', type: 'tts', state: 'start' });
    const packet = new Uint8Array([11 << 3, 0, 0]); // SILK 60 ms
    for (let i = 0; i < 10; i++) s.onmessage?.({ data: packet.buffer.slice(0) });
    s.msg({ session_id: 'S1', type: 'tts', state: 'stop' });
  };

  it('opens its channel at the wake word, waits for the server hello, streams Opus, plays the reply, then listens on (auto mode)', () => {
    const f = fakeEnv('xz-1');
    const d = new Device(
      {
        id: 'xz-1',
        baseUrl: 'ws://127.0.0.1:1',
        profile: PROFILES['xiaozhi-esp32']!,
        dialect: xiaozhi,
        wake: { mode: 'fixed', interval_ms: 20_000, first_min_ms: 1000, first_max_ms: 1000 },
      },
      f.env,
    );
    d.start(0);
    f.clock.advance(900);
    assert.equal(f.sockets.length, 0, 'no channel before the wake word');
    f.clock.advance(100);
    const s = f.last();
    assert.equal(s.url, 'ws://127.0.0.1:1/xiaozhi/v1/');
    assert.match(s.headers['Device-Id']!, /^02(:[0-9a-f]{2}){5}$/);
    assert.match(s.headers['Client-Id']!, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-8[0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(s.headers['Protocol-Version'], '1');
    s.open();
    assert.equal(s.json()[0]!.type, 'hello');
    assert.equal(s.json()[0]!.audio_params.format, 'opus');
    f.clock.advance(30);
    s.msg({ type: 'hello', transport: 'websocket', session_id: 'S1' });
    const [, detect, start] = s.json();
    assert.deepEqual([detect!.type, detect!.state, detect!.session_id], ['listen', 'detect', 'S1']);
    assert.deepEqual([start!.state, start!.mode], ['start', 'auto']);
    assert.deepEqual(f.metrics.values('wake_ack_latency'), [30], 'the wait includes the channel handshake');
    f.clock.advance(3000 + 900);
    assert.ok(s.binaryCount() >= 60, `${s.binaryCount()} Opus packets: speech, then silence for the VAD`);
    f.clock.advance(100);
    reply(s);
    assert.equal(f.metrics.count('sessions_completed'), 0, 'the reply still plays');
    f.clock.advance(700);
    assert.equal(f.metrics.count('sessions_completed'), 1);
    // application.cc: tts stop in auto mode goes back to listening on the same channel, microphone on.
    assert.equal(s.closedByDevice, null, 'the channel stays open');
    assert.deepEqual(s.json().at(-1), { session_id: 'S1', type: 'listen', state: 'start', mode: 'auto' });
    const before = s.binaryCount();
    f.clock.advance(6000);
    const silence = s.binaryCount() - before;
    assert.ok(
      silence >= 98 && silence <= 101,
      `${silence} packets of 60 ms in 6 s: the microphone streams at real time`,
    );
    // The next turn in the schedule is the user speaking again: no wake word, no new channel.
    f.clock.advance(15_000); // the next turn is due 20 s after the first ended
    assert.equal(f.sockets.length, 1);
    assert.equal(f.metrics.count('follow_ups'), 1);
    assert.equal(f.metrics.count('wakes'), 1, 'a follow-up is not a wake');
    assert.equal(s.json().filter((m) => m.state === 'detect').length, 1);
    f.clock.advance(4000);
    reply(s);
    f.clock.advance(1000);
    assert.equal(f.metrics.count('sessions_completed'), 2);
    assert.equal(f.metrics.values('response_latency').length, 2);
    // The server's no-voice close ends the listening channel: the device goes idle, nothing is lost.
    s.serverClose(1000);
    assert.equal(d.state, 'idle');
    assert.equal(f.metrics.count('unplanned_drops'), 0);
    assert.equal(f.metrics.count('sessions_dropped'), 0);
    assert.equal(f.metrics.values('connect_success').join(), '1');
    const sent = s.binaryCount();
    f.clock.advance(5000);
    assert.equal(s.binaryCount(), sent, 'the microphone stops with the channel');
  });

  it('closes the channel with its conversation when the profile idles after a reply, and gives a listening channel up after 120 s with nothing received', () => {
    /** One wake, the channel's hello, the utterance, a reply played out: the device's channel after that turn. */
    const oneTurn = (id: string, profile: Profile) => {
      const f = fakeEnv(id);
      const d = new Device(
        {
          id,
          baseUrl: 'ws://127.0.0.1:1',
          profile,
          dialect: xiaozhi,
          wake: { mode: 'once', interval_ms: 0, first_min_ms: 1000, first_max_ms: 1000 },
        },
        f.env,
      );
      d.start(0);
      f.clock.advance(1000);
      const s = f.last();
      s.open();
      s.msg({ type: 'hello', transport: 'websocket', session_id: 'S1' });
      f.clock.advance(4000);
      reply(s);
      f.clock.advance(1000);
      return { f, d, s };
    };
    const { f, d, s } = oneTurn('xz-2', { ...PROFILES['xiaozhi-esp32']!, name: 'xz-idle', after_reply: 'idle' });
    assert.equal(f.metrics.count('sessions_completed'), 1);
    assert.equal(s.closedByDevice, 1000, 'the channel closes with its conversation');
    assert.equal(d.state, 'idle');

    // A listening channel the server ends abnormally (a crash, a reset) is a lost link, not the no-voice close.
    const crash = oneTurn('xz-4', PROFILES['xiaozhi-esp32']!);
    crash.s.serverClose(1006);
    assert.equal(crash.d.state, 'idle');
    assert.equal(crash.f.metrics.count('unplanned_drops'), 1);
    assert.equal(crash.f.metrics.count('sessions_dropped'), 0, 'no conversation was on it');

    const { f: g, d: e, s: t } = oneTurn('xz-3', PROFILES['xiaozhi-esp32']!);
    assert.equal(t.closedByDevice, null, 'listening');
    g.clock.advance(121_000);
    assert.equal(t.closedByDevice, 1000, 'the firmware gives the silent channel up');
    assert.equal(e.state, 'idle');
    assert.equal(g.metrics.count('unplanned_drops'), 0);
  });
});

describe('barge-in', () => {
  it("interrupts the reply with the dialect's abort, counts the stale audio and times how long it kept coming", () => {
    const f = fakeEnv('xz-2');
    const profile = { ...PROFILES['xiaozhi-esp32']!, barge_in_ms: 200 };
    const d = new Device(
      {
        id: 'xz-2',
        baseUrl: 'ws://127.0.0.1:1',
        profile,
        dialect: xiaozhi,
        wake: { mode: 'once', interval_ms: 0, first_min_ms: 0, first_max_ms: 0 },
      },
      f.env,
    );
    d.start(0);
    f.clock.advance(0);
    const s = f.last();
    s.open();
    s.msg({ type: 'hello', transport: 'websocket', session_id: 'S2' });
    f.clock.advance(4000);
    s.msg({ session_id: 'S2', type: 'stt', text: 'hi' });
    s.msg({ session_id: 'S2', type: 'tts', state: 'start' });
    const packet = new Uint8Array([11 << 3, 0, 0]);
    s.onmessage?.({ data: packet.buffer.slice(0) });
    f.clock.advance(200);
    const abort = s.json().at(-1)!;
    assert.deepEqual([abort.type, abort.reason, abort.session_id], ['abort', 'wake_word_detected', 'S2']);
    for (let i = 0; i < 3; i++) {
      f.clock.advance(20);
      s.onmessage?.({ data: packet.buffer.slice(0) });
    }
    f.clock.advance(40);
    s.msg({ session_id: 'S2', type: 'tts', state: 'stop' });
    assert.equal(f.metrics.count('barge_ins'), 1);
    assert.equal(f.metrics.count('barge_in_late_frames'), 3);
    assert.deepEqual(f.metrics.values('barge_in_stop_time'), [60]);
    assert.equal(f.metrics.count('sessions_dropped'), 0, 'a barge-in is the user talking, not a drop');
    // The user talked over the reply: the channel listens on for what they say.
    assert.equal(s.closedByDevice, null);
    assert.deepEqual([s.json().at(-1)!.type, s.json().at(-1)!.state], ['listen', 'start']);
  });

  it('waits at most 5 s for a server that never stops the reply', () => {
    const f = fakeEnv('ws-3');
    const profile = { ...PROFILES.recommended!, barge_in_ms: 100 };
    const d = new Device(
      {
        id: 'ws-3',
        baseUrl: 'ws://127.0.0.1:1',
        profile,
        dialect: wakestorm,
        wake: { mode: 'once', interval_ms: 0, first_min_ms: 10, first_max_ms: 10 },
      },
      f.env,
    );
    d.start(0);
    f.clock.advance(0);
    const s = f.last();
    s.open();
    s.connected();
    f.clock.advance(10);
    const wake = s.json().find((m) => m.type === 'hotword_detected')!;
    s.msg({ type: 'session_started', session_id: 'S3', wake_id: wake.wake_id });
    f.clock.advance(3500);
    s.msg({ type: 'tts_stream_start', session_id: 'S3', sample_rate: 16000, bytes: 64000 });
    s.bin(3200);
    f.clock.advance(100);
    assert.equal(s.json().at(-1)!.type, 'cancel');
    for (let i = 0; i < 50; i++) {
      f.clock.advance(100);
      s.bin(3200);
    }
    f.clock.advance(1000);
    // The device gives up at 5 s: the last stale frame it saw came at 4.9 s, and what comes after is not its session.
    assert.deepEqual(f.metrics.values('barge_in_stop_time'), [4900]);
    assert.equal(f.metrics.count('barge_in_late_frames'), 49);
    assert.equal(
      f.metrics.samples.find((x) => x.name === 'session_drop_rate')?.value,
      0,
      'ended as cancelled, not dropped',
    );
  });
});

describe('stepOf: the label try prints', () => {
  it("is the step the device takes, in the device's order: a pong that also matches the ack is a pong", () => {
    const d = structuredClone(nodeDialect('wakestorm'));
    d.recv.pong = { type: 'status' };
    d.recv.ack = { type: 'status' };
    assert.equal(stepOf(d, { type: 'status' }, {}), 'pong');
    d.recv.pong = null;
    assert.equal(stepOf(d, { type: 'status' }, {}), 'ack');
  });
});
