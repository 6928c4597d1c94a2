// Each fault through real Toxiproxy, applied by the in-test chaos VU, with its effect asserted on real k6 devices' metrics.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PROFILES } from '../../core/profiles.ts';
import type { StackOptions } from '../../scripts/stack.ts';
import { runK6, type K6Result } from '../../scripts/k6.ts';
import { startVoiceServer } from '../../server/server.ts';
import { startStack, type Stack } from '../../scripts/stack.ts';
import { pickFreePort } from '../../scripts/process-control.ts';
import { startEngine, type RunningEngine } from '../../scripts/engine.ts';
import { runCli } from '../helpers/proc.ts';

const SMOKE = new URL('../../scenarios/smoke.ts', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'wakestorm-chaos-'));

function file(name: string, content: unknown): string {
  const p = join(dir, name);
  writeFileSync(p, JSON.stringify(content));
  return p;
}

/** A profile that pings every 2 s and calls the link dead after 1 s without a pong. */
const FAST = file('fast.json', {
  ...PROFILES.recommended,
  name: 'fast-liveness',
  keepalive: { answer_server_pings: true, send: 'json-ping', interval_ms: 2000 },
  liveness: { detect: 'pong-timeout', timeout_ms: 1000, check_ms: 0 },
  reconnect: { policy: 'fixed', base_ms: 1000, cap_ms: 1000, max_attempts: 0, on: 'abnormal' },
});

async function stackWith(server: StackOptions['server']): Promise<Stack> {
  return startStack({
    serverPort: await pickFreePort(),
    toxiproxyPort: await pickFreePort(),
    proxyPorts: { voice: 0 },
    server,
  });
}

function run(stack: Stack, vars: Record<string, string | number>): Promise<K6Result> {
  return runK6({
    script: SMOKE,
    vars: {
      TARGET_URL: stack.targetUrl,
      TOXIPROXY_URL: stack.toxiproxyUrl,
      CONTROL_URL: stack.controlUrl,
      NO_RESULTS: 1,
      RAMP: '500ms',
      ...vars,
    },
    timeoutMs: 120_000,
  });
}

const p50 = (r: K6Result, m: string) => r.summary!.metrics[m]!.values['p(50)']!;
const count = (r: K6Result, m: string) => r.summary!.metrics[m]?.values.count ?? 0;

describe('faults on a healthy server', () => {
  let stack: Stack;
  before(async () => {
    stack = await stackWith({ sttMs: 50, llmMs: 50, ttsMs: 50, ttsPace: 'burst' });
  });
  after(async () => stack.stop());

  it('latency moves ping_rtt and response_latency by the injected amount', async () => {
    const vars = { DEVICES: 10, DURATION: '10s', WAKE: 'once:1s-3s', PROFILE: FAST };
    const base = await run(stack, vars);
    assert.equal(base.code, 0, base.stdout);
    const tl = file('latency.json', [
      { at: '0s', for: '8s', fault: 'latency', stream: 'downstream', params: { latency: 100 } },
      { at: '0s', for: '8s', fault: 'latency', stream: 'upstream', params: { latency: 50 } },
    ]);
    const slow = await run(stack, { ...vars, TIMELINE: tl });
    const dPing = p50(slow, 'ping_rtt') - p50(base, 'ping_rtt');
    const dResp = p50(slow, 'response_latency') - p50(base, 'response_latency');
    assert.ok(dPing >= 150 && dPing <= 175, `ping_rtt moved by ${dPing} ms for 100+50 ms injected`);
    // end_of_speech is 50 ms later upstream, the first TTS byte 100 ms later downstream.
    assert.ok(dResp >= 140 && dResp <= 175, `response_latency moved by ${dResp} ms for 150 ms injected`);
    assert.equal(count(slow, 'chaos_events'), 4, 'two onsets and two ends');
    assert.equal(count(slow, 'chaos_errors'), 0);
    const toxics = (await (await fetch(`${stack.toxiproxyUrl}/proxies/voice/toxics`)).json()) as unknown[];
    assert.deepEqual(toxics, [], 'nothing left applied');
  });

  it('rejects a malformed timeline before any load, naming the entry', async () => {
    const tl = file('bad.json', [
      { at: '1s', for: '2s', fault: 'latency' },
      { at: '1s', for: '2s', fault: 'latency', params: { lag: 5 } },
    ]);
    const r = await run(stack, { DEVICES: 2, DURATION: '5s', TIMELINE: tl });
    assert.equal(r.code, 107, r.stdout + r.stderr);
    assert.match(r.stdout + r.stderr, /entry 1 \(latency\): fault \\?"latency\\?" has no param \\?"lag\\?"/);
    assert.equal(r.summary, null, 'k6 stopped in the init context: no load, no summary');
  });
});

// The link's faults on both device engines, with the same assertions: the k6 device (k6/websockets) and the native
// engine (engine/, driven by k6 over its control socket) must measure the same things the same way.
for (const engine of ['k6', 'native'] as const) {
  describe(`link faults, devices in ${engine}`, () => {
    let stack: Stack;
    let native: RunningEngine | null = null;
    before(async () => {
      stack = await stackWith({});
      if (engine === 'native') native = await startEngine();
    });
    after(async () => {
      await native?.stop();
      await stack.stop();
    });
    const runOn = (vars: Record<string, string | number>) =>
      run(stack, native ? { ...vars, ENGINE_URL: native.url } : vars);

    it('blackhole (half-open) is noticed within the liveness timeout, and disconnect_detect_time says so', async () => {
      const tl = file('blackhole.json', [{ at: '2s', for: '5s', fault: 'blackhole' }]);
      const r = await runOn({ DEVICES: 10, DURATION: '12s', WAKE: 'off', PROFILE: FAST, TIMELINE: tl });
      assert.equal(count(r, 'connection_drops'), 10, r.stdout);
      const m = r.summary!.metrics.disconnect_detect_time!.values;
      assert.equal(m.count, 10);
      // Pings every 2 s, dead after 1 s without a pong: noticed 1-3 s after the link went silent.
      assert.ok(m.min! >= 1000 && m.max! <= 3300, `detected after ${m.min}-${m.max} ms`);
    });

    it('cut gives drops, reconnects, and a reconnect_time that follows the fixed backoff', async () => {
      const tl = file('cut.json', [{ at: '2s', for: '2s', fault: 'cut' }]);
      const r = await runOn({ DEVICES: 10, DURATION: '10s', WAKE: 'off', PROFILE: FAST, TIMELINE: tl });
      assert.equal(count(r, 'connection_drops'), 10, r.stdout + r.stderr);
      assert.ok(count(r, 'reconnect_attempts') >= 20, 'refused while the cut lasts, then back');
      const rt = r.summary!.metrics.reconnect_time!.values;
      assert.equal(rt.count, 10);
      // Tries at +1 s (refused) and +2 s, when the 2 s cut ends: back after 2-3 s.
      assert.ok(rt.min! >= 1900 && rt.max! <= 3300, `reconnect_time ${rt.min}-${rt.max} ms`);
    });

    it('reset closes open links with 1006', async () => {
      // reset_peer fires on the next chunk: 3 s covers one 2 s ping of every device.
      const tl = file('reset.json', [{ at: '2s', for: '3s', fault: 'reset' }]);
      const slo = file('slo-reset.json', [
        { name: 'resets_seen', metric: 'connection_drops{code:1006}', aggregation: 'count', op: '==', target: 10 },
      ]);
      const r = await runOn({ DEVICES: 10, DURATION: '8s', WAKE: 'off', PROFILE: FAST, TIMELINE: tl, SLO_FILE: slo });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(count(r, 'connection_drops{code:1006}'), 10);
    });
  });
}

describe('Toxiproxy shards', () => {
  it('spread devices over every shard, and a timeline cuts all of them at once', async () => {
    const stack = await startStack({
      serverPort: await pickFreePort(),
      toxiproxyPort: await pickFreePort(),
      proxyPorts: { voice: 0 },
      toxiproxyShards: 2,
    });
    try {
      assert.equal(stack.shards.length, 2);
      assert.notEqual(stack.shards[0]!.targetUrl, stack.shards[1]!.targetUrl);
      const tl = file('cut-shards.json', [{ at: '2s', for: '2s', fault: 'cut' }]);
      const cut = (toxiproxies: string[]) =>
        runK6({
          script: SMOKE,
          vars: {
            TARGET_URL: stack.shards.map((s) => s.targetUrl).join(','),
            TOXIPROXY_URL: toxiproxies.join(','),
            NO_RESULTS: 1,
            RAMP: '500ms',
            DEVICES: 10,
            DURATION: '10s',
            WAKE: 'off',
            PROFILE: FAST,
            TIMELINE: tl,
          },
          timeoutMs: 120_000,
        });
      // The cut told to shard 0 only: the 5 devices behind shard 1 never notice, so devices really are spread.
      const one = await cut([stack.shards[0]!.toxiproxyUrl]);
      assert.equal(one.code, 0, one.stdout);
      assert.equal(count(one, 'connection_drops'), 5);
      // Told to both: the whole fleet drops at once and comes back.
      const both = await cut(stack.shards.map((s) => s.toxiproxyUrl));
      assert.equal(both.code, 0, both.stdout);
      assert.equal(count(both, 'connection_drops'), 10);
      assert.ok(count(both, 'reconnect_time') >= 10, `reconnects ${count(both, 'reconnect_time')}`);
      // `wakestorm toxic` takes the same list: a fault added by hand lands on every shard, and reset clears them all.
      const T = ['toxic', '--toxiproxy-url', stack.shards.map((s) => s.toxiproxyUrl).join(',')];
      const add = await runCli([...T, 'add', 'latency', 'latency=80']);
      assert.equal(add.code, 0, add.stderr);
      for (const sh of stack.shards) {
        const toxics = (await (await fetch(`${sh.toxiproxyUrl}/proxies/voice/toxics`)).json()) as {
          attributes: { latency: number };
        }[];
        assert.equal(toxics.length, 1, sh.toxiproxyUrl);
        assert.equal(toxics[0]!.attributes.latency, 80);
      }
      assert.match((await runCli([...T, 'reset'])).stdout, /on 2 shards/);
      for (const sh of stack.shards) {
        const toxics = (await (await fetch(`${sh.toxiproxyUrl}/proxies/voice/toxics`)).json()) as unknown[];
        assert.deepEqual(toxics, [], 'no toxic left on any shard');
        const p = (await (await fetch(`${sh.toxiproxyUrl}/proxies/voice`)).json()) as { enabled: boolean };
        assert.equal(p.enabled, true);
      }
    } finally {
      await stack.stop();
    }
  });
});

describe('sessions caught mid-reply', () => {
  let stack: Stack;
  before(async () => {
    stack = await stackWith({ sttMs: 30, llmMs: 30, ttsMs: 30, ttsPace: 'realtime' });
  });
  after(async () => stack.stop());

  // Wakes land at epoch+0…0.5 s, speech ends ~3 s later, the reply streams for ~3 s: a cut at +4.5 s hits every reply.
  const tl = () => file('midreply.json', [{ at: '4500ms', for: '1s', fault: 'cut' }]);

  it('are resumed and completed when the profile resumes', async () => {
    const r = await run(stack, {
      DEVICES: 8,
      DURATION: '16s',
      WAKE: 'once:1s-1500ms',
      PROFILE: 'recommended',
      TIMELINE: tl(),
    });
    assert.equal(count(r, 'sessions_started'), 8, r.stdout);
    assert.equal(count(r, 'sessions_resumed'), 8);
    assert.equal(count(r, 'sessions_completed'), 8);
    assert.equal(count(r, 'sessions_dropped'), 0);
  });

  it('are counted dropped when the profile does not resume, in the phase of the fault; a during target judges them', async () => {
    // The steady-state gate holds (the losses are the fault's, and the firmware's choice not to resume); a target
    // for the fault itself (session_drop_rate@during) is what breaks.
    const r = await run(stack, {
      DEVICES: 8,
      DURATION: '16s',
      WAKE: 'once:1s-1500ms',
      PROFILE: 'react-avatar',
      TIMELINE: tl(),
      SLO_session_drop_rate__during: '0.01',
    });
    assert.equal(count(r, 'sessions_started'), 8, r.stdout);
    assert.equal(count(r, 'sessions_resumed'), 0);
    assert.equal(count(r, 'sessions_dropped'), 8);
    assert.equal(r.summary!.metrics['session_drop_rate{chaos:during}']!.values.rate, 1);
    assert.equal(r.code, 99, 'the drop-rate SLO during the fault is breached');
    assert.match(r.stdout, /VERDICT: FAIL \(session_drop_rate@during\)/);
  });
});

describe('server-restart', () => {
  it('drains the reference server with 1012; devices come back to a fresh server that has no state to resume', async () => {
    const stack = await stackWith({ sttMs: 30, llmMs: 30, ttsMs: 30, drainMs: 500 });
    try {
      const tl = file('restart.json', [{ at: '2s', for: '2s', fault: 'server-restart' }]);
      const r = await run(stack, { DEVICES: 10, DURATION: '12s', WAKE: 'off', PROFILE: FAST, TIMELINE: tl });
      assert.equal(count(r, 'connection_drops{code:1012}'), 10, r.stdout + r.stderr);
      assert.equal(r.summary!.metrics.reconnect_time!.values.count, 10, 'every device came back');
      assert.ok(r.summary!.metrics.reconnect_time!.values.min! >= 1500, 'not while the server was down');
      assert.equal(count(r, 'chaos_errors'), 0);
      const h = (await (await fetch(`${stack.serverHttpUrl}/health`)).json()) as { uptime_s: number };
      assert.ok(h.uptime_s < 15, 'a new server process');
    } finally {
      await stack.stop();
    }
  });
});

describe('the SLO gate', () => {
  it('exits 99 with a failed JUnit case when the pipeline is slower than the SLO, and 0 when healthy', async () => {
    const slow = await stackWith({ sttMs: 600, llmMs: 300, ttsMs: 100, ttsPace: 'burst' });
    const out = mkdtempSync(join(tmpdir(), 'wakestorm-gate-'));
    let r: K6Result;
    try {
      r = await runK6({
        script: SMOKE,
        vars: { TARGET_URL: slow.targetUrl, DEVICES: 5, DURATION: '10s', WAKE: 'once:1s-2s', RESULTS_DIR: out },
        timeoutMs: 60_000,
      });
    } finally {
      await slow.stop();
    }
    assert.equal(r.code, 99);
    const junit = readFileSync(join(out, 'junit.xml'), 'utf8');
    // 16 SLOs and the tester's own case; reconnect, recovery, resume and barge-in are n/a (skipped): no link was lost, no device barged in.
    assert.match(junit, /<testsuite name="wakestorm.smoke" tests="18" failures="1" errors="0" skipped="4"/);
    assert.match(
      junit,
      /<testcase classname="wakestorm.smoke" name="response_p95 \(response_latency\{chaos:steady\} p\(95\) &lt; 800 ms\)">\s*<failure message="response_latency\{chaos:steady\} measured 1[23]\d\d\.\d ms, target p\(95\) &lt; 800 ms; endpointing p95 \d+ ms [^;]*, the rest p95 \d+ ms; profile recommended 1[23]\d\d\.\d ms; phase reply"/,
    );
    assert.ok(existsSync(join(out, 'summary.json')) && existsSync(join(out, 'events.json')));
    assert.match(r.stdout, /response_p95\s+p\(95\) < 800 ms\s+1[23]\d\d\.\d ms\s+FAIL/);
    assert.match(r.stdout, /VERDICT: FAIL \(response_p95\)/);

    const healthy = await stackWith({ sttMs: 100, llmMs: 100, ttsMs: 50, ttsPace: 'burst' });
    const out2 = mkdtempSync(join(tmpdir(), 'wakestorm-gate-'));
    try {
      r = await runK6({
        script: SMOKE,
        vars: { TARGET_URL: healthy.targetUrl, DEVICES: 5, DURATION: '10s', WAKE: 'once:1s-2s', RESULTS_DIR: out2 },
        timeoutMs: 60_000,
      });
    } finally {
      await healthy.stop();
    }
    assert.equal(r.code, 0, r.stdout);
    assert.match(readFileSync(join(out2, 'junit.xml'), 'utf8'), /tests="18" failures="0" errors="0" skipped="4"/);
    assert.match(r.stdout, /VERDICT: PASS \(13 SLOs met, 4 n\/a\)/);
  });

  it('refuses to start when the target is unreachable or Toxiproxy is down, before any load', async () => {
    const port = await pickFreePort();
    const r = await runK6({
      script: SMOKE,
      vars: { TARGET_URL: `ws://127.0.0.1:${port}`, NO_RESULTS: 1, DURATION: '5s' },
      timeoutMs: 60_000,
    });
    assert.notEqual(r.code, 0);
    assert.match(r.stdout + r.stderr, /cannot reach TARGET_URL ws:\/\/127\.0\.0\.1:\d+/);
    assert.equal(count(r, 'devices_started'), 0);

    const server = await startVoiceServer({ port: 0 });
    try {
      const dead = await pickFreePort();
      const t = await runK6({
        script: SMOKE,
        vars: {
          TARGET_URL: server.wsUrl,
          TOXIPROXY_URL: `http://127.0.0.1:${dead}`,
          TIMELINE: 'flaky-wifi',
          DURATION: '50s',
          NO_RESULTS: 1,
        },
        timeoutMs: 60_000,
      });
      assert.notEqual(t.code, 0);
      assert.match(t.stdout + t.stderr, /Toxiproxy is not running at http:\/\/127\.0\.0\.1:\d+/);
      assert.equal(count(t, 'devices_started'), 0);
      assert.equal(server.connectionCount(), 0, 'no device connected');
    } finally {
      await server.close();
    }
  });
});
