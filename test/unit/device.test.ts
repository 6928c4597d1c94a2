// The device state machine under a fake clock: backoff, give-up, close-code rules, liveness, resume, drops, playback.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Backoff, type BackoffSpec } from '../../core/backoff.ts';
import { Device } from '../../core/device.ts';
import { SESSION_STALL_MS } from '../../core/device-session.ts';
import { FIRST_FRAME_GRACE_MS, INTAKE } from '../../core/device-link.ts';
import { FirstFrameProbe, type WakeSchedule } from '../../core/device-env.ts';
import {
  PROFILES,
  ProfileError,
  parseProfileMix,
  profileFor,
  validateProfile,
  type Profile,
} from '../../core/profiles.ts';
import { mulberry32 } from '../../core/rng.ts';
import { fakeEnv } from '../helpers/fake-env.ts';
import { nodeAudio, nodeDialect } from '../../scripts/node-devices.ts';

const NO_WAKE: WakeSchedule = { mode: 'off', interval_ms: 0, first_min_ms: 0, first_max_ms: 0 };
const WAKE_AT_1S: WakeSchedule = { mode: 'once', interval_ms: 0, first_min_ms: 1000, first_max_ms: 1000 };

function device(profileName: string, wake: WakeSchedule = NO_WAKE, profile?: Profile) {
  const f = fakeEnv();
  const p = profile ?? PROFILES[profileName]!;
  const d = new Device(
    { id: 'dev-0', baseUrl: 'ws://127.0.0.1:1', profile: p, dialect: nodeDialect(p.dialect ?? 'wakestorm'), wake },
    f.env,
  );
  d.start(0);
  f.clock.advance(0);
  return { d, ...f };
}

/** Opens the current socket and answers like the server (hello or path). */
function handshake(f: ReturnType<typeof device>, extra: object = {}) {
  const s = f.last();
  s.open();
  s.connected(extra);
  return s;
}

/** Delays between consecutive connect attempts, as the device waits them. */
function attemptGaps(f: ReturnType<typeof device>, tries: number, stepMs = 100): number[] {
  const times: number[] = [];
  let seen = f.sockets.length;
  for (let guard = 0; times.length < tries && guard < 100_000; guard++) {
    f.clock.advance(stepMs);
    if (f.sockets.length > seen) {
      times.push(f.clock.now);
      seen = f.sockets.length;
      f.last().serverClose(); // refused: error then close with no code
    }
  }
  return times;
}

describe('backoff policies', () => {
  const spec = (policy: BackoffSpec['policy']): BackoffSpec => ({
    policy,
    base_ms: 500,
    cap_ms: 8000,
    max_attempts: 0,
  });
  it('fixed, exponential: exact sequences, capped', () => {
    const fixed = new Backoff(spec('fixed'), Math.random);
    assert.deepEqual(
      [1, 2, 3].map((n) => fixed.next(n)),
      [500, 500, 500],
    );
    const exp = new Backoff(spec('exponential'), Math.random);
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6, 7].map((n) => exp.next(n)),
      [500, 1000, 2000, 4000, 8000, 8000, 8000],
    );
  });
  it('full, equal and decorrelated jitter stay inside their bounds and vary', () => {
    for (const policy of ['full-jitter', 'equal-jitter', 'decorrelated-jitter'] as const) {
      const b = new Backoff(spec(policy), mulberry32(42));
      const seen = new Set<number>();
      for (let n = 1; n <= 200; n++) {
        const d = b.next(Math.min(n, 10));
        const exp = Math.min(8000, 500 * 2 ** (Math.min(n, 10) - 1));
        if (policy === 'full-jitter') assert.ok(d >= 0 && d <= exp, `${policy} ${d}`);
        if (policy === 'equal-jitter') assert.ok(d >= exp / 2 - 1 && d <= exp, `${policy} ${d}`);
        if (policy === 'decorrelated-jitter') assert.ok(d >= 500 && d <= 8000, `${policy} ${d}`);
        seen.add(d);
      }
      assert.ok(seen.size > 50, `${policy} varies`);
    }
  });
  it('is reproducible from the seed', () => {
    const a = new Backoff(spec('full-jitter'), mulberry32(7));
    const b = new Backoff(spec('full-jitter'), mulberry32(7));
    assert.deepEqual(
      [1, 2, 3, 4].map((n) => a.next(n)),
      [1, 2, 3, 4].map((n) => b.next(n)),
    );
  });
});

describe('reconnect per profile', () => {
  it('esp32-hotpin: says hello on /ws, tries after 3 s, then every 5 s, forever', () => {
    const f = device('esp32-hotpin');
    const s = f.last();
    assert.match(s.url, /\/ws$/);
    s.open();
    const hello = s.json()[0]!;
    assert.equal(hello.type, 'hello');
    assert.equal(hello.device_id, 'dev-0');
    assert.equal(hello.protocol, 1);
    s.connected();
    assert.equal(f.d.state, 'connected');
    const lostAt = f.clock.now;
    s.serverClose(1006);
    // The firmware polls a flag every 10 s: the loss is noticed at the next check.
    const gaps = attemptGaps(f, 5);
    assert.equal(gaps[0]! - lostAt, 10_000 + 3000);
    assert.deepEqual(
      gaps.slice(1).map((t, i) => t - gaps[i]!),
      [5000, 5000, 5000, 5000],
    );
    assert.equal(f.metrics.count('devices_gave_up'), 0);
  });

  it('react-avatar: 1, 2, 4, 8, 16, then 30 s cap; gives up after 10 tries; no reconnect after a 1000 close', () => {
    const f = device('react-avatar');
    handshake(f);
    f.last().serverClose(1011);
    const start = f.clock.now;
    const gaps = attemptGaps(f, 10);
    const deltas = gaps.map((t, i) => t - (i === 0 ? start : gaps[i - 1]!));
    assert.deepEqual(deltas, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000, 30000]);
    f.clock.advance(120_000);
    assert.equal(f.sockets.length, 11, 'no 11th try');
    assert.equal(f.d.state, 'gave_up');
    assert.equal(f.metrics.count('devices_gave_up'), 1);
    assert.equal(f.metrics.count('reconnect_attempts'), 10);

    const g = device('react-avatar');
    handshake(g);
    g.last().serverClose(1000);
    g.clock.advance(120_000);
    assert.equal(g.sockets.length, 1, 'a normal close is final for this client');
    assert.equal(g.d.state, 'closed');
  });

  it('pi-assistant: 2^n s + U(0,1) s, capped at 61 s; reconnects even after 1000', () => {
    const f = device('pi-assistant');
    handshake(f);
    f.last().serverClose(1000);
    const start = f.clock.now;
    const gaps = attemptGaps(f, 8, 10);
    const deltas = gaps.map((t, i) => t - (i === 0 ? start : gaps[i - 1]!));
    const base = [1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000];
    deltas.forEach((d, i) => assert.ok(d >= base[i]! && d <= base[i]! + 1010, `try ${i + 1}: ${d} ms`));
  });

  it('web-heartbeat: one try after 5 s, then gives up', () => {
    const f = device('web-heartbeat');
    handshake(f);
    f.last().serverClose(1006);
    f.clock.advance(5000);
    assert.equal(f.sockets.length, 2);
    f.last().serverClose();
    f.clock.advance(60_000);
    assert.equal(f.sockets.length, 2);
    assert.equal(f.metrics.count('devices_gave_up'), 1);
  });

  it('recommended: full jitter under min(30 s, 0.5 s × 2^n), forever', () => {
    const f = device('recommended');
    handshake(f);
    f.last().serverClose(1012);
    const start = f.clock.now;
    const gaps = attemptGaps(f, 12, 10);
    const deltas = gaps.map((t, i) => t - (i === 0 ? start : gaps[i - 1]!));
    deltas.forEach((d, i) => assert.ok(d <= Math.min(30_000, 500 * 2 ** i) + 10, `try ${i + 1}: ${d}`));
    assert.equal(f.metrics.count('devices_gave_up'), 0);
  });

  it('counts drops, flaps, reconnect_time and disconnect_detect_time', () => {
    const f = device('recommended');
    handshake(f);
    f.clock.advance(1000);
    f.setDied(f.clock.now - 300);
    f.last().serverClose(1006); // within 2 s of connected: a flap
    const lost = f.clock.now;
    f.clock.advance(30_000);
    handshake(f);
    assert.equal(f.metrics.count('connection_drops'), 1);
    assert.equal(f.metrics.count('flaps'), 1);
    assert.deepEqual(f.metrics.values('disconnect_detect_time'), [300]);
    const rt = f.metrics.values('reconnect_time');
    assert.equal(rt.length, 1);
    assert.ok(rt[0]! > 0 && rt[0]! <= f.clock.now - lost);
  });
});

describe('connect failures in the socket library words', () => {
  it('shows why a connect failed, once per kind of error, and a timeout says how far it got', () => {
    const f = device('recommended');
    const refused = 'dial tcp 127.0.0.1:41234: connect: connection refused (unit)';
    f.last().onerror?.({ error: refused });
    f.last().serverClose();
    assert.equal(f.warnings.filter((w) => w.includes('connection refused (unit)')).length, 1);
    assert.match(
      f.warnings.find((w) => w.includes('(unit)'))!,
      /^wakestorm-connect-failed dev-0 after \d+ ms: dial tcp/,
    );
    // The same kind on another port is not shown again.
    f.clock.advance(60_000);
    f.last().onerror?.({ error: refused.replace('41234', '41999') });
    f.last().serverClose();
    assert.equal(f.warnings.filter((w) => w.includes('connection refused (unit)')).length, 1);
    // An error after the socket opened is not a connect failure of this kind.
    f.clock.advance(60_000);
    const s = f.last();
    s.open();
    f.clock.advance(10_000);
    assert.equal(s.closedByDevice !== null, true, 'the device gave up the attempt');
    assert.ok(
      f.warnings.some((w) => /after 10000 ms: connect timeout \(the socket opened, no ready message\)/.test(w)),
    );
  });
});

describe('a first frame the socket library dropped (k6/websockets)', () => {
  /** A device whose socket library can drop the server's first frame, with its VU's probe, as k6-fleet.ts sets it. */
  function k6Device(profile = 'recommended', probe = new FirstFrameProbe()) {
    const f = device(profile);
    f.env.firstFrameProbe = probe;
    return f;
  }

  it('a pong with no ready before it, and none within the grace, reopens at once: a tester retry, not a failure', () => {
    const f = k6Device();
    const s = f.last();
    s.open();
    assert.equal(s.pings, 1, 'the device pings at open');
    s.pong();
    f.clock.advance(FIRST_FRAME_GRACE_MS - 1);
    assert.equal(f.sockets.length, 1, 'not before the grace ends');
    f.clock.advance(1);
    assert.equal(f.sockets.length, 2, 'reopened at once, no backoff');
    assert.notEqual(s.closedByDevice, null, 'the silent socket is closed');
    assert.equal(f.metrics.count('tester_retries'), 1);
    assert.equal(f.metrics.values('connect_success').length, 0, 'no failed connect counted');
    assert.equal(f.metrics.count('unplanned_drops'), 0);
    assert.ok(f.warnings.some((w) => w.startsWith('wakestorm-tester-retry dev-0')));
    handshake(f);
    assert.equal(f.d.link.state, 'connected');
    assert.deepEqual(f.metrics.values('connect_success'), [1]);
  });

  it('reopens once per connect: a second silent open waits for the connect timeout and counts against the server', () => {
    const f = k6Device();
    f.last().open();
    f.last().pong();
    f.clock.advance(FIRST_FRAME_GRACE_MS);
    const again = f.last();
    again.open();
    again.pong();
    f.clock.advance(9_000);
    assert.equal(f.sockets.length, 2, 'no second tester retry');
    f.clock.advance(1_500);
    assert.deepEqual(f.metrics.values('connect_success'), [0], 'the timeout is a failed connect');
    assert.equal(f.metrics.count('tester_retries'), 1);
  });

  it('a ready before the pong, a hello dialect, or a library that drops nothing: no probe and no retry', () => {
    const ok = k6Device();
    const s = ok.last();
    s.open();
    s.connected();
    s.pong();
    ok.clock.advance(1_000);
    assert.equal(ok.sockets.length, 1);
    assert.equal(ok.d.link.state, 'connected');
    const hello = k6Device('esp32-hotpin');
    hello.last().open();
    assert.equal(hello.last().pings, 0, 'the device speaks first: its hello comes after the open');
    const engine = device('recommended');
    engine.last().open();
    assert.equal(engine.last().pings, 0);
  });

  it('reopens within a budget per VU, so a server that withholds its ready is still judged', () => {
    const probe = new FirstFrameProbe();
    const silentOpen = () => {
      const f = k6Device('recommended', probe);
      f.last().open();
      f.last().pong();
      f.clock.advance(FIRST_FRAME_GRACE_MS);
      return f;
    };
    assert.equal(silentOpen().metrics.count('tester_retries'), 1, 'the first reopen is within the budget');
    const second = silentOpen();
    assert.equal(second.metrics.count('tester_retries'), 0, 'past the budget (1 + 1 per 5,000 opens)');
    assert.equal(second.sockets.length, 1, 'no reopen');
    second.clock.advance(10_000);
    assert.deepEqual(second.metrics.values('connect_success'), [0], 'the connect timeout counts it');
  });

  it('a ready that comes after the pong turns the probe off for the VU', () => {
    const probe = new FirstFrameProbe();
    const f = k6Device('recommended', probe);
    const s = f.last();
    s.open();
    s.pong();
    f.clock.advance(FIRST_FRAME_GRACE_MS - 10);
    s.connected();
    assert.equal(f.d.link.state, 'connected');
    f.clock.advance(1_000);
    assert.equal(f.metrics.count('tester_retries'), 0);
    const later = k6Device('recommended', probe);
    later.last().open();
    assert.equal(later.last().pings, 0, 'disarmed');
    const otherVu = k6Device();
    otherVu.last().open();
    assert.equal(otherVu.last().pings, 1, 'another VU probes on');
  });
});

describe('liveness', () => {
  it('recommended: a JSON ping every 15 s; no pong within 5 s means the link is dead', () => {
    const f = device('recommended');
    const s = handshake(f);
    f.clock.advance(15_000);
    const ping = s.json().find((m) => m.type === 'ping')!;
    assert.ok(ping);
    s.msg({ type: 'pong', id: ping.id, t: ping.t });
    assert.equal(f.metrics.values('ping_rtt').length, 1);
    f.clock.advance(15_000); // next ping, never answered: half-open link
    f.clock.advance(4999);
    assert.equal(f.d.state, 'connected');
    f.clock.advance(1);
    assert.notEqual(f.d.state, 'connected');
    assert.equal(f.metrics.count('connection_drops'), 1);
    assert.notEqual(s.closedByDevice, null, 'the dead socket is closed by the device');
  });

  it('keepalive timers fire at the end of their grid slot, shared by devices connected apart', () => {
    const a = device('recommended');
    a.clock.advance(3); // connected off the grid: its ping is due at 15,003 ms, sent at the slot's end
    const s = handshake(a);
    a.clock.advance(15_006);
    assert.equal(s.json().filter((m) => m.type === 'ping').length, 0, 'not before its slot ends');
    a.clock.advance(1);
    assert.equal(s.json().filter((m) => m.type === 'ping').length, 1, 'at 15,010 ms');
  });

  it('react-avatar: answers server pings; notices 60 s of silence at its 15 s check', () => {
    const f = device('react-avatar');
    const s = handshake(f);
    s.msg({ type: 'ping', t: 5 });
    assert.deepEqual(s.json().at(-1), { type: 'pong', t: 5 });
    const silentFrom = f.clock.now;
    f.clock.advance(59_000);
    assert.equal(f.d.state, 'connected');
    f.clock.advance(16_000);
    assert.notEqual(f.d.state, 'connected');
    const noticed = f.metrics.samples.find((x) => x.name === 'connection_drops');
    assert.ok(noticed);
    assert.ok(f.clock.now - silentFrom >= 60_000);
  });

  it('esp32-p4-screen: 45 s of silence (its TCP keepalive) ends the link; pi-assistant sends ws pings every 30 s', () => {
    const f = device('esp32-p4-screen');
    handshake(f);
    f.clock.advance(44_000);
    assert.equal(f.d.state, 'connected');
    f.clock.advance(6000);
    assert.notEqual(f.d.state, 'connected');

    const g = device('pi-assistant');
    const s = handshake(g);
    g.clock.advance(90_000);
    assert.equal(s.pings, 3);
    assert.equal(g.d.state, 'connected', 'pi notices only a close');
  });

  it('esp32-hotpin relies on the server: no pings of its own, and a silent link goes unnoticed', () => {
    const f = device('esp32-hotpin');
    const s = handshake(f);
    f.clock.advance(300_000);
    assert.equal(s.pings, 0);
    assert.equal(s.json().filter((m) => m.type === 'ping').length, 0);
    assert.equal(f.d.state, 'connected');
  });
});

describe('sessions', () => {
  /** Wakes at 1 s, gets session_started, and streams the utterance. */
  function wakeAndStream(f: ReturnType<typeof device>) {
    const s = f.last();
    f.clock.advance(1000);
    const wake = s.json().find((m) => m.type === 'hotword_detected')!;
    assert.ok(wake, 'woke');
    f.clock.advance(3);
    s.msg({ type: 'session_started', session_id: 's-1', wake_id: wake.wake_id });
    return { s, wake };
  }

  it('streams at real time in its frame size, ends speech, records latencies, plays back, completes', () => {
    const f = device('recommended', WAKE_AT_1S);
    handshake(f);
    const { s } = wakeAndStream(f);
    assert.deepEqual(f.metrics.values('wake_ack_latency'), [3]);
    f.clock.advance(1000);
    const framesIn1s = s.binaryCount();
    assert.ok(framesIn1s >= 50 && framesIn1s <= 52, `640-byte frames in 1 s: ${framesIn1s}`);
    // The end of speech is the sending of the utterance's last voiced frame (the trailing silence is not speech).
    const lastVoiced = nodeAudio().frames(640).silent.lastIndexOf(false);
    let lastVoicedAt = 0;
    let eosSent = false;
    for (let i = 0; i < 800 && !eosSent; i++) {
      f.clock.advance(5);
      if (!lastVoicedAt && s.binaryCount() > lastVoiced) lastVoicedAt = f.clock.now;
      eosSent = s.json().some((m) => m.type === 'end_of_speech');
    }
    const eos = s.json().find((m) => m.type === 'end_of_speech');
    assert.deepEqual(eos, { type: 'end_of_speech', session_id: 's-1' });
    assert.ok(
      lastVoicedAt > 0 && f.clock.now - lastVoicedAt >= 300,
      'the utterance ends in ~320 ms of silence, sent before end_of_speech',
    );
    f.clock.advance(700);
    s.msg({ type: 'transcript', session_id: 's-1', text: 'x' });
    const transcriptAt = f.clock.now;
    s.msg({ type: 'llm_response', session_id: 's-1', text: 'y' });
    s.msg({ type: 'tts_stream_start', session_id: 's-1', sample_rate: 16000, bytes: 32000 });
    f.clock.advance(40);
    const firstAudioAt = f.clock.now;
    for (let i = 0; i < 8; i++) {
      s.bin(4000); // 125 ms each, 1 s of audio, arriving faster than real time
      f.clock.advance(50);
    }
    s.msg({ type: 'tts_stream_end', session_id: 's-1', chunks: 8, bytes: 32000 });
    assert.deepEqual(f.metrics.values('response_latency'), [firstAudioAt - lastVoicedAt]);
    assert.deepEqual(f.metrics.values('endpointing_latency'), [transcriptAt - lastVoicedAt]);
    assert.deepEqual(f.metrics.values('processing_latency'), [firstAudioAt - transcriptAt]);
    assert.deepEqual(f.metrics.values('reply_truncated'), [0], 'all 32000 announced bytes arrived');
    assert.deepEqual(f.metrics.values('reply_stutter'), [0]);
    assert.deepEqual(f.metrics.values('playback_stall_time'), [0]);
    assert.ok(!s.json().some((m) => m.type === 'playback_complete'), 'not before the audio has played');
    f.clock.advance(1000);
    assert.ok(s.json().some((m) => m.type === 'playback_complete'));
    s.msg({ type: 'session_end', session_id: 's-1', reason: 'complete' });
    assert.equal(f.metrics.count('sessions_completed'), 1);
    assert.deepEqual(f.metrics.values('session_drop_rate'), [0]);
    assert.equal(f.metrics.count('playback_underruns'), 0);
  });

  it('a server that stops reading: past INTAKE.unsentBytes unsent the link is dropped, server_not_reading', () => {
    const f = device('recommended', WAKE_AT_1S);
    handshake(f);
    const { s } = wakeAndStream(f);
    f.clock.advance(2000);
    assert.equal(f.metrics.count('protocol_violations'), 0, 'what the socket holds is below the bound');
    // The socket holds what the server does not read (k6's bufferedAmount).
    Object.defineProperty(s, 'bufferedAmount', { value: INTAKE.unsentBytes + 1 });
    f.clock.advance(64 * 20 + 100);
    assert.equal(f.metrics.count('protocol_violations'), 1);
    assert.deepEqual(f.metrics.tagsOf('protocol_violations')[0]?.kind, 'server_not_reading');
    assert.ok(s.closedByDevice !== null, 'the device drops the link');
  });

  it('counts a playback underrun when TTS arrives slower than real time', () => {
    const f = device('recommended', WAKE_AT_1S);
    handshake(f);
    const { s } = wakeAndStream(f);
    f.clock.advance(5000);
    s.msg({ type: 'tts_stream_start', session_id: 's-1', sample_rate: 16000, bytes: 40960 });
    for (let i = 0; i < 10; i++) {
      s.bin(4096); // 128 ms of audio each, but one every 300 ms
      f.clock.advance(300);
    }
    assert.ok(f.metrics.count('playback_underruns') >= 5, `underruns ${f.metrics.count('playback_underruns')}`);
  });

  it('vad profile: streams silence after the utterance and sends no end_of_speech', () => {
    const f = device('esp32-hotpin', WAKE_AT_1S);
    handshake(f);
    const { s } = wakeAndStream(f);
    f.clock.advance(4500);
    assert.ok(!s.json().some((m) => m.type === 'end_of_speech'));
    const before = s.binaryCount();
    f.clock.advance(200);
    assert.ok(s.binaryCount() > before, 'still streaming (silence) until the server decides');
    s.msg({ type: 'transcript', session_id: 's-1', text: 'x' });
    const after = s.binaryCount();
    f.clock.advance(1000);
    assert.equal(s.binaryCount(), after, 'stops at the transcript');
  });

  it('drops: timeout is dropped, barge-in is not, a loss without resume is', () => {
    const f = device('react-avatar', { mode: 'fixed', interval_ms: 1000, first_min_ms: 1000, first_max_ms: 1000 });
    handshake(f);
    const { s } = wakeAndStream(f);
    s.msg({ type: 'session_end', session_id: 's-1', reason: 'timeout' });
    assert.equal(f.metrics.count('sessions_dropped'), 1);
    f.clock.advance(1000);
    const w2 = s
      .json()
      .filter((m) => m.type === 'hotword_detected')
      .at(-1)!;
    s.msg({ type: 'session_started', session_id: 's-2', wake_id: w2.wake_id });
    s.msg({ type: 'session_end', session_id: 's-2', reason: 'barged_in' });
    assert.equal(f.metrics.count('sessions_dropped'), 1);
    f.clock.advance(1000);
    const w3 = s
      .json()
      .filter((m) => m.type === 'hotword_detected')
      .at(-1)!;
    s.msg({ type: 'session_started', session_id: 's-3', wake_id: w3.wake_id });
    s.serverClose(1006);
    assert.equal(f.metrics.count('sessions_dropped'), 2, 'react-avatar does not resume');
    assert.deepEqual(f.metrics.values('session_drop_rate'), [1, 0, 1]);
  });

  it('a server that stops mid-reply: the session ends timeout (dropped) after SESSION_STALL_MS of silence, not before', () => {
    // esp32-hotpin checks nothing of its own (no ping, no silence watchdog): only the stall rule can end this.
    const f = device('esp32-hotpin', WAKE_AT_1S);
    handshake(f);
    const { s } = wakeAndStream(f);
    f.clock.advance(6000); // the utterance and its trailing silence
    s.msg({ type: 'tts_stream_start', session_id: 's-1', sample_rate: 16000, bytes: 64000 });
    s.bin(4000);
    const lastHeard = f.clock.now;
    f.clock.advance(SESSION_STALL_MS - 1000);
    assert.equal(f.metrics.count('sessions_dropped'), 0, 'still waiting');
    f.clock.advance(2000);
    assert.ok(f.clock.now - lastHeard > SESSION_STALL_MS);
    assert.equal(f.metrics.count('sessions_dropped'), 1);
    assert.deepEqual(f.metrics.values('session_drop_rate'), [1]);
    assert.deepEqual(
      f.metrics.samples.filter((x) => x.name === 'sessions_dropped').map((x) => x.tags),
      [{ profile: 'esp32-hotpin', reason: 'timeout' }],
    );
  });

  it('the stall wait pauses while the link is down: a reply that comes after a long outage and a resume completes', () => {
    const f = device('recommended', WAKE_AT_1S);
    handshake(f, { resume_token: 'tok-A' });
    const { s } = wakeAndStream(f);
    f.clock.advance(4000);
    s.serverClose(1006);
    f.clock.advance(SESSION_STALL_MS + 5000); // offline far longer than the stall bound (the reconnects fail)
    for (const x of f.sockets.slice(1)) if (x.readyState === 0) x.serverClose();
    f.clock.advance(30_000);
    const back = f.last();
    back.open();
    back.connected({ resumed: true, session: { session_id: 's-1', stage: 'thinking' } });
    f.clock.advance(SESSION_STALL_MS - 2000);
    back.msg({ type: 'tts_stream_start', session_id: 's-1', sample_rate: 16000, bytes: 4000 });
    back.bin(4000);
    back.msg({ type: 'tts_stream_end', session_id: 's-1', chunks: 1, bytes: 4000 });
    f.clock.advance(1000);
    back.msg({ type: 'session_end', session_id: 's-1', reason: 'complete' });
    assert.equal(f.metrics.count('sessions_dropped'), 0);
    assert.equal(f.metrics.count('sessions_completed'), 1);
  });

  it('a wake never acknowledged frees the device: the next wake word is said', () => {
    const f = device('recommended', { mode: 'fixed', interval_ms: 2000, first_min_ms: 1000, first_max_ms: 1000 });
    const s = handshake(f);
    f.clock.advance(1000);
    assert.equal(s.json().filter((m) => m.type === 'hotword_detected').length, 1);
    f.clock.advance(12_100); // the 10 s ack timeout, then the next wake 2 s later
    assert.deepEqual(f.metrics.values('wake_success'), [0]);
    assert.equal(s.json().filter((m) => m.type === 'hotword_detected').length, 2);
    assert.equal(f.metrics.count('sessions_dropped'), 0, 'nothing had started');
  });

  it('resume: reconnects with ?resume=<token>, counts the resumed session, drops it if the server lost it', () => {
    const f = device('recommended', WAKE_AT_1S);
    handshake(f, { resume_token: 'tok-A' });
    const { s } = wakeAndStream(f);
    f.clock.advance(4000);
    s.serverClose(1006);
    assert.equal(f.metrics.count('sessions_dropped'), 0, 'kept for the resume');
    f.clock.advance(1000);
    const s2 = f.last();
    assert.notEqual(s2, s);
    assert.match(s2.url, /\/ws\/dev-0\?resume=tok-A$/);
    s2.open();
    s2.connected({ resumed: true, session: { session_id: 's-1', stage: 'thinking' }, resume_token: 'tok-A' });
    assert.equal(f.metrics.count('sessions_resumed'), 1);
    s2.msg({ type: 'session_end', session_id: 's-1', reason: 'complete' });
    assert.equal(f.metrics.count('sessions_completed'), 1);

    const g = device('recommended', WAKE_AT_1S);
    handshake(g);
    const { s: t } = wakeAndStream(g);
    t.serverClose(1006);
    g.clock.advance(1000);
    g.last().open();
    g.last().connected({ resumed: false });
    assert.equal(g.metrics.count('sessions_dropped'), 1);
  });

  it('a wake while the link is down is sent on reconnect, and its ack latency includes the wait', () => {
    const f = device('recommended', WAKE_AT_1S);
    handshake(f);
    f.clock.advance(500);
    f.last().serverClose(1006);
    f.clock.advance(2000); // wakes at 1 s while down
    const s2 = f.last();
    s2.open();
    s2.connected();
    const wake = s2.json().find((m) => m.type === 'hotword_detected');
    assert.ok(wake);
    s2.msg({ type: 'session_started', session_id: 's-9', wake_id: wake.wake_id });
    const ack = f.metrics.values('wake_ack_latency');
    assert.equal(ack.length, 1);
    assert.ok(ack[0]! >= 1000, `ack ${ack[0]}`);
  });

  it('never closes a socket still in its handshake (that blocks a k6 VU): it closes it if it ever opens', () => {
    const f = device('recommended');
    const first = f.last();
    f.clock.advance(10_000); // connect timeout while CONNECTING
    assert.equal(first.closedByDevice, null, 'no close() on a CONNECTING socket');
    first.open(); // the handshake finally completes: now it is closed
    assert.equal(first.closedByDevice, undefined);
    assert.equal(f.d.state === 'backoff' || f.d.state === 'connecting', true);
    const g = device('recommended');
    g.d.stop();
    assert.equal(g.last().closedByDevice, null);
    g.last().open();
    assert.equal(g.last().closedByDevice, 1000);
  });

  it('stop() leaves no timer and sends a 1000 close', () => {
    const f = device('pi-assistant', { mode: 'poisson', interval_ms: 5000, first_min_ms: 0, first_max_ms: 5000 });
    const s = handshake(f);
    f.clock.advance(20_000);
    f.d.stop();
    assert.equal(s.closedByDevice, 1000);
    assert.equal(f.clock.pending(), 0);
  });
});

describe('profiles as data', () => {
  it('ships every profile of the source documents, each valid', () => {
    for (const n of [
      'esp32-hotpin',
      'react-avatar',
      'pi-assistant',
      'esp32-p4-screen',
      'web-heartbeat',
      'recommended',
    ]) {
      assert.ok(PROFILES[n], n);
      validateProfile(PROFILES[n]);
    }
  });
  it('names the bad field of a profile file, and an unknown profile', () => {
    const bad = {
      ...PROFILES.recommended,
      name: 'mine',
      reconnect: { ...PROFILES.recommended!.reconnect, policy: 'yolo' },
    };
    assert.throws(
      () => parseProfileMix('mine.json', () => JSON.stringify(bad)),
      (e: Error) => e instanceof ProfileError && /"mine": field "reconnect.policy"/.test(e.message),
    );
    assert.throws(() => parseProfileMix('esp32-hotpin:70,nope:30', () => ''), /unknown profile "nope"/);
    assert.throws(() => parseProfileMix('x.json', () => '{nope'), /not valid JSON/);
    assert.throws(() => validateProfile({ ...PROFILES.recommended, frame_bytes: 641 }), /frame_bytes/);
    // Every problem at once, a typo'd key named with what it likely meant; a missing object is one problem.
    const { reconnect, ...rest } = PROFILES.recommended!;
    const typo = { ...rest, reconect: reconnect, frame_bytes: 3, keepalive: { ...rest.keepalive, intervl_ms: 5 } };
    assert.throws(
      () => validateProfile(typo, 'mine.json'),
      (e: Error) =>
        e instanceof ProfileError &&
        /4 problems: field "reconect" is not a field \(did you mean "reconnect"\?\); field "keepalive.intervl_ms" is not a field \(did you mean "interval_ms"\?\); field "reconnect" must be an object; field "frame_bytes"/.test(
          e.message,
        ),
    );
    assert.throws(() => validateProfile({ ...PROFILES.recommended, wake_word: '' }), /field "wake_word"/);
  });
  it('splits a mix by weight, deterministically', () => {
    const mix = parseProfileMix('esp32-hotpin:70,recommended:30', () => '');
    const names = Array.from({ length: 100 }, (_, i) => profileFor(i, 100, mix).name);
    assert.equal(names.filter((n) => n === 'esp32-hotpin').length, 70);
    assert.equal(names.filter((n) => n === 'recommended').length, 30);
  });
});
