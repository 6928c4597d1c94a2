// What the user hears, under a fake clock: replies judged whole and smooth, a heartbeat ack with no id, server
// messages the dialect does not match, every dialect problem at once, and bounded socket tags for any dialect path.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Device } from '../../core/device.ts';
import type { WakeSchedule } from '../../core/device-env.ts';
import { DialectError, typeField, validateDialect, type Dialect } from '../../core/dialect.ts';
import { PROFILES, type Profile } from '../../core/profiles.ts';
import { nodeDialect } from '../../scripts/node-devices.ts';
import { fakeEnv } from '../helpers/fake-env.ts';

/** A dialect as loose JSON, to break on purpose. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests edit arbitrary fields of a valid dialect
type Loose = Record<string, any>;

const WAKE_AT_1S: WakeSchedule = { mode: 'once', interval_ms: 0, first_min_ms: 1000, first_max_ms: 1000 };
const NO_WAKE: WakeSchedule = { mode: 'off', interval_ms: 0, first_min_ms: 0, first_max_ms: 0 };
const copy = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;

function device(profile: Profile, wake: WakeSchedule, dialect: Dialect = nodeDialect('wakestorm')) {
  const f = fakeEnv();
  const d = new Device({ id: 'dev-0', baseUrl: 'ws://127.0.0.1:1', profile, dialect, wake }, f.env);
  d.start(0);
  f.clock.advance(0);
  const s = f.last();
  s.open();
  s.connected();
  return { d, s, ...f };
}

/** A recommended device that woke, was acknowledged, spoke and was endpointed: the reply is next. */
function replyNext() {
  const f = device(PROFILES.recommended!, WAKE_AT_1S);
  f.clock.advance(1000);
  const wake = f.s.json().find((m) => m.type === 'hotword_detected')!;
  f.s.msg({ type: 'session_started', session_id: 's-1', wake_id: wake.wake_id });
  f.clock.advance(4000);
  f.s.msg({ type: 'transcript', session_id: 's-1', text: 'x' });
  return f;
}

describe('replies whole and smooth', () => {
  it('a reply paced slower than real time stutters: judged once, with the time it stood dry', () => {
    const f = replyNext();
    f.s.msg({ type: 'tts_stream_start', session_id: 's-1', sample_rate: 16000, bytes: 40960 });
    for (let i = 0; i < 10; i++) {
      f.s.bin(4096); // 128 ms of audio every 200 ms: 72 ms dry each time after the prebuffer
      f.clock.advance(200);
    }
    f.s.msg({ type: 'tts_stream_end', session_id: 's-1', chunks: 10, bytes: 40960 });
    assert.deepEqual(f.metrics.values('reply_stutter'), [1]);
    assert.deepEqual(f.metrics.values('reply_truncated'), [0]);
    const [stall] = f.metrics.values('playback_stall_time');
    assert.ok(stall! >= 400 && stall! <= 800, `stood dry ${stall} ms`);
  });

  it('a reply at real time with a lead plays smoothly; a gap under the tolerance is no stutter', () => {
    const f = replyNext();
    f.s.msg({ type: 'tts_stream_start', session_id: 's-1', sample_rate: 16000, bytes: 40960 });
    f.s.bin(4096);
    f.s.bin(4096);
    for (let i = 0; i < 8; i++) {
      f.clock.advance(i === 4 ? 140 : 128); // one chunk 12 ms late: inside the lead
      f.s.bin(4096);
    }
    f.s.msg({ type: 'tts_stream_end', session_id: 's-1', chunks: 10, bytes: 40960 });
    assert.deepEqual(f.metrics.values('reply_stutter'), [0]);
    assert.equal(f.metrics.count('playback_underruns'), 0);
  });

  it('a reply shorter than announced, and an end with no audio, are truncated', () => {
    const short = replyNext();
    short.s.msg({ type: 'tts_stream_start', session_id: 's-1', sample_rate: 16000, bytes: 40960 });
    for (let i = 0; i < 5; i++) short.s.bin(4096);
    short.s.msg({ type: 'tts_stream_end', session_id: 's-1', chunks: 10, bytes: 40960 });
    assert.deepEqual(short.metrics.values('reply_truncated'), [1]);

    const empty = replyNext();
    empty.s.msg({ type: 'tts_stream_start', session_id: 's-1', sample_rate: 16000, bytes: 0 });
    empty.s.msg({ type: 'tts_stream_end', session_id: 's-1', chunks: 0, bytes: 0 });
    assert.deepEqual(empty.metrics.values('reply_truncated'), [1], 'no audio at all');

    // The start announced more than the end admits: the start's announcement stands.
    const shrunk = replyNext();
    shrunk.s.msg({ type: 'tts_stream_start', session_id: 's-1', sample_rate: 16000, bytes: 40960 });
    for (let i = 0; i < 5; i++) shrunk.s.bin(4096);
    shrunk.s.msg({ type: 'tts_stream_end', session_id: 's-1', chunks: 5, bytes: 20480 });
    assert.deepEqual(shrunk.metrics.values('reply_truncated'), [1]);
  });

  it('a session that ends while its reply played judges the reply (no reply end ever came)', () => {
    const f = replyNext();
    f.s.msg({ type: 'tts_stream_start', session_id: 's-1', sample_rate: 16000, bytes: 40960 });
    f.s.bin(4096);
    f.s.msg({ type: 'session_end', session_id: 's-1', reason: 'complete' });
    assert.deepEqual(f.metrics.values('reply_truncated'), [1]);
  });
});

describe('a dialect that means what it says', () => {
  it('a pong with no id answers the oldest outstanding ping', () => {
    const d = copy<Dialect>(nodeDialect('wakestorm'));
    d.capture = { ...d.capture, pong: {} };
    const f = device(PROFILES.recommended!, NO_WAKE, validateDialect(d, 'noid'));
    const every = PROFILES.recommended!.keepalive.interval_ms;
    f.clock.advance(every);
    for (let i = 0; i < 4; i++) {
      f.clock.advance(30);
      f.s.msg({ type: 'pong' });
      f.clock.advance(i < 3 ? every - 30 : 1000);
    }
    assert.equal(f.s.json().filter((m) => m.type === 'ping').length, 4);
    assert.deepEqual(f.metrics.values('ping_rtt'), [30, 30, 30, 30]);
    assert.equal(f.d.state, 'connected', 'no pong timeout: every ping was answered');
  });

  it('a pong that carries another id does not answer the ping', () => {
    const f = device(PROFILES.recommended!, NO_WAKE);
    f.clock.advance(PROFILES.recommended!.keepalive.interval_ms);
    f.s.msg({ type: 'pong', id: 999 });
    assert.deepEqual(f.metrics.values('ping_rtt'), []);
  });

  it('reports every problem at once, each with its JSON path, in one line', () => {
    const d = copy(nodeDialect('wakestorm')) as unknown as Loose;
    d.send.wake[0].wake_id = '{wakeid}';
    d.audio.up.framing = 'gzip';
    d.recv.reply_end = 'x';
    d.send.ping = null;
    d.capture.ping = {};
    assert.throws(
      () => validateDialect(d, 'acme.json'),
      (e: Error) =>
        e instanceof DialectError &&
        !e.message.includes('\n') &&
        /5 problems/.test(e.message) &&
        /acme\.json\.send\.wake\[0\]\.wake_id: unknown placeholder/.test(e.message) &&
        /acme\.json\.audio\.up\.framing/.test(e.message) &&
        /acme\.json\.recv\.reply_end: must be a matcher/.test(e.message) &&
        /recv\.pong: a pong answers the device's own ping, but send\.ping is null/.test(e.message) &&
        /send\.pong: uses \{ping_t\}, which only capture\.ping\.ping_t can set/.test(e.message),
    );
  });

  it('refuses a resuming dialect that cannot tell a resume, and prototype keys anywhere', () => {
    const d = copy(nodeDialect('wakestorm')) as unknown as Loose;
    delete d.capture.ready.resumed;
    assert.throws(() => validateDialect(d, 'r'), /r\.resume: is true, but capture\.ready lacks resumed/);
    const p = copy(nodeDialect('wakestorm')) as unknown as Loose;
    p.send.hello = JSON.parse('{"type":"hello","__proto__":{"x":1}}');
    assert.throws(() => validateDialect(p, 'p'), /p\.send\.hello\.__proto__: is not allowed/);
    const c = copy(nodeDialect('wakestorm')) as unknown as Loose;
    c.capture.ack = { constructor: 'session_id' };
    assert.throws(() => validateDialect(c, 'c'), /c\.capture\.ack\.constructor/);
  });

  it('counts a server message no step matches by its type, shows it once, and keeps the type tag bounded', () => {
    const f = device(PROFILES.recommended!, NO_WAKE);
    f.s.msg({ type: 'audio_begin', session_id: 's-9' });
    f.s.msg({ type: 'audio_begin', session_id: 's-9' });
    f.s.msg({ type: 'llm_response', text: 'the dialect ignores this one' });
    assert.equal(f.metrics.count('unmatched_messages'), 2);
    assert.deepEqual(
      f.metrics.tagsOf('unmatched_messages').map((t) => t.type),
      ['audio_begin', 'audio_begin'],
    );
    assert.equal(typeField(nodeDialect('wakestorm')), 'type');
    assert.equal(f.warnings.filter((w) => w.includes('type=audio_begin')).length, 1, 'shown once');
    for (let i = 0; i < 40; i++) f.s.msg({ type: `junk-${i}` });
    const types = new Set(f.metrics.tagsOf('unmatched_messages').map((t) => t.type));
    assert.ok(types.size <= 17 && types.has('other'), `bounded: ${types.size}`);
  });
});

describe('bounded socket tags', () => {
  it('names the socket by the dialect path template, never by the device id', () => {
    const d = copy<Dialect>(nodeDialect('wakestorm'));
    d.connect = { ...d.connect, path: '/acme/{device_id}', query: { resume: '{resume_token}' } };
    const profile = { ...PROFILES.recommended!, name: 'acme' };
    const names = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const f = fakeEnv(`dev-${i}`);
      new Device(
        { id: `dev-${i}`, baseUrl: 'ws://127.0.0.1:1', profile, dialect: validateDialect(d, 'acme'), wake: NO_WAKE },
        f.env,
      ).start(0);
      f.clock.advance(0);
      assert.match(f.last().url, new RegExp(`/acme/dev-${i}$`));
      for (const n of f.names) names.add(n);
    }
    assert.deepEqual([...names], ['ws://127.0.0.1:1/acme/{device_id}']);
  });
});

describe('bounded intake and every session judged', () => {
  it('a flood, a big frame, a long text, deep JSON, invalid UTF-8 and a broken frame are violations, counted by kind', () => {
    const kinds: string[] = [];
    for (const send of [
      (s: ReturnType<typeof device>['s']) => {
        for (let i = 0; i < 1200; i++) s.msg({ type: 'noise', i });
      },
      (s: ReturnType<typeof device>['s']) => s.bin(2 * 1024 * 1024),
      (s: ReturnType<typeof device>['s']) =>
        s.onmessage?.({ data: JSON.stringify({ type: 'x', pad: 'y'.repeat(70_000) }) }),
      (s: ReturnType<typeof device>['s']) => s.onmessage?.({ data: `${'['.repeat(40)}1${']'.repeat(40)}` }),
      // k6 decodes a text frame's invalid UTF-8 as U+FFFD.
      (s: ReturnType<typeof device>['s']) => s.onmessage?.({ data: '{"type":"transcript","text":"\uFFFD\uFFFD"}' }),
      // k6 closed the link itself (a reserved opcode): a close with no code and no error.
      (s: ReturnType<typeof device>['s']) => s.onclose?.({}),
    ]) {
      const f = device(PROFILES.recommended!, NO_WAKE);
      send(f.s);
      const tags = f.metrics.tagsOf('protocol_violations');
      assert.equal(tags.length, 1, 'counted once: the link is closed at the first');
      kinds.push(tags[0]!.kind!);
      assert.notEqual(f.d.state, 'connected', 'the device closed the link');
      assert.equal(f.metrics.count('reconnects_abandoned'), 0, 'and reconnects as after any protocol error');
    }
    assert.deepEqual(kinds, ['flood', 'frame_too_big', 'text_too_long', 'json_too_deep', 'invalid_utf8', 'bad_frame']);
  });

  it('a reply past its announced length is an overrun', () => {
    const f = replyNext();
    f.s.msg({ type: 'tts_stream_start', session_id: 's-1', sample_rate: 16000, bytes: 8192 });
    for (let i = 0; i < 4; i++) f.s.bin(4096);
    assert.deepEqual(
      f.metrics.tagsOf('protocol_violations').map((t) => t.kind),
      ['reply_overrun'],
    );
  });

  it('a session still open at the end is dropped when it began more than the stall bound ago, and not judged otherwise', () => {
    const old = replyNext();
    old.s.msg({ type: 'tts_stream_start', session_id: 's-1', sample_rate: 16000 });
    for (let i = 0; i < 14; i++) {
      old.clock.advance(1000);
      old.s.bin(4096);
    }
    old.d.stop();
    assert.deepEqual(old.metrics.values('session_drop_rate'), [1]);
    const young = device(PROFILES.recommended!, WAKE_AT_1S);
    young.clock.advance(1000);
    const wake = young.s.json().find((m) => m.type === 'hotword_detected')!;
    young.s.msg({ type: 'session_started', session_id: 's-1', wake_id: wake.wake_id });
    young.clock.advance(2000);
    young.d.stop();
    assert.deepEqual(young.metrics.values('session_drop_rate'), [], 'not yet due');
  });
});
