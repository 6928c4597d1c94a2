// Real k6 devices against the real server through real Toxiproxy: metric values in k6's summary tell the truth.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { runK6 } from '../../scripts/k6.ts';
import { startStack, type Stack } from '../../scripts/stack.ts';
import { pickFreePort } from '../../scripts/process-control.ts';

const SMOKE = new URL('../../scenarios/smoke.ts', import.meta.url).pathname;
const STT = 120;
const LLM = 60;
const TTS = 40;

describe('k6 devices through Toxiproxy', () => {
  let stack: Stack;
  before(async () => {
    stack = await startStack({
      serverPort: await pickFreePort(),
      toxiproxyPort: await pickFreePort(),
      proxyPorts: { voice: 0 },
      server: { sttMs: STT, llmMs: LLM, ttsMs: TTS },
    });
  });
  after(async () => stack.stop());

  it('a clean run completes every wake, and response_latency p50 tracks stt+llm+tts', async () => {
    const r = await runK6({
      script: SMOKE,
      vars: {
        TARGET_URL: stack.targetUrl,
        NO_RESULTS: 1,
        DEVICES: 30,
        DEVICES_PER_VU: 10,
        DURATION: '14s',
        WAKE: 'once:1s-4s',
        PROFILE: 'recommended:1,esp32-hotpin:1,pi-assistant:1',
      },
      timeoutMs: 90_000,
    });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const m = r.summary!.metrics;
    assert.equal(m.wakes!.values.count, 30);
    assert.equal(m.sessions_completed!.values.count, 30, 'sessions completed equal wakes');
    assert.equal(m.session_drop_rate!.values.rate, 0);
    const p50 = m.response_latency!.values['p(50)']!;
    // From the last voiced frame: the server's 300 ms endpointing window (a whole number of the profile's frames: 20,
    // 32 or 128 ms, so 300-384 ms) and the pipeline.
    const configured = 300 + STT + LLM + TTS;
    assert.ok(
      p50 >= configured && p50 <= configured + 100,
      `response_latency p50 ${p50} ms vs configured ${configured} ms`,
    );
    assert.ok(m.wake_ack_latency!.values['p(95)']! < 50);
    assert.equal(m.devices_connected!.values.max, 10, 'devices sampled per VU');
  });

  it('carries TOKEN as a bearer token, and a wrong one never connects', async () => {
    const secured = await startStack({
      serverPort: await pickFreePort(),
      toxiproxyPort: await pickFreePort(),
      proxyPorts: { voice: 0 },
      server: { tokens: ['fleet-secret-1'] },
    });
    try {
      const ok = await runK6({
        script: SMOKE,
        vars: {
          TARGET_URL: secured.targetUrl,
          NO_RESULTS: 1,
          DEVICES: 5,
          DURATION: '5s',
          WAKE: 'off',
          TOKEN: 'fleet-secret-1',
        },
        timeoutMs: 60_000,
      });
      assert.equal(ok.summary!.metrics.connect_success!.values.rate, 1, ok.stdout);
      const bad = await runK6({
        script: SMOKE,
        vars: {
          TARGET_URL: secured.targetUrl,
          NO_RESULTS: 1,
          DEVICES: 5,
          DURATION: '5s',
          WAKE: 'off',
          TOKEN: 'wrong-token',
        },
        timeoutMs: 60_000,
      });
      assert.equal(bad.summary!.metrics.connect_success!.values.passes, 0, bad.stdout);
      assert.ok(bad.summary!.metrics.connect_success!.values.fails! >= 5);
    } finally {
      await secured.stop();
    }
  });

  it('ends on time when handshakes never complete (k6 would block a VU on close() while connecting)', async () => {
    const { createServer } = await import('node:http');
    const held: import('node:stream').Duplex[] = [];
    const silent = createServer((_req, res) => res.end('{}')).on('upgrade', (_req, socket) => held.push(socket));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    const port = (silent.address() as { port: number }).port;
    const t0 = Date.now();
    try {
      const r = await runK6({
        script: SMOKE,
        vars: {
          TARGET_URL: `ws://127.0.0.1:${port}`,
          NO_RESULTS: 1,
          DEVICES: 3,
          DURATION: '12s',
          RAMP: '1s',
          WAKE: 'off',
        },
        timeoutMs: 90_000,
      });
      assert.notEqual(r.summary, null, r.stdout + r.stderr);
      assert.ok(r.summary!.metrics.connect_success!.values.fails! >= 3, 'the 10 s connect timeout fired');
    } finally {
      for (const s of held) s.destroy();
      silent.close();
    }
    // DURATION 12 s + maxDuration slack 15 s + gracefulStop 5 s: a blocked VU would hold k6 until killed.
    assert.ok(Date.now() - t0 < 60_000, `k6 took ${Date.now() - t0} ms`);
  });

  it('a device forced off the network reports a drop and a reconnect', async () => {
    const run = runK6({
      script: SMOKE,
      vars: {
        TARGET_URL: stack.targetUrl,
        NO_RESULTS: 1,
        DEVICES: 10,
        DURATION: '12s',
        WAKE: 'off',
        PROFILE: 'recommended',
      },
      timeoutMs: 90_000,
    });
    await new Promise((r) => setTimeout(r, 5000));
    await stack.toxiproxy!.setEnabled('voice', false);
    await new Promise((r) => setTimeout(r, 1500));
    await stack.toxiproxy!.setEnabled('voice', true);
    const r = await run;
    // A cut by hand is not in any timeline: to the gate it is an unplanned drop, whatever the devices did after it.
    assert.equal(r.code, 99, 'an unplanned cut fails unplanned_drops');
    // 10 links lost, and every refused reconnect during the cut.
    assert.match(r.stdout, /unplanned_drops\s+count == 0\s+\d\d+\s+FAIL/);
    const m = r.summary!.metrics;
    assert.equal(m.connection_drops!.values.count, 10);
    assert.ok(m.reconnect_attempts!.values.count! >= 10);
    assert.equal(m.reconnect_time!.values.count, 10, 'every device came back');
    assert.ok(m.reconnect_time!.values['p(50)']! >= 1000, 'not before the cut ended');
    assert.ok(m.reconnect_time!.values['p(95)']! < 10_000);
    assert.match(r.stdout, /reconnect_p95\s+p\(95\) < 10000 ms\s+\d+\.\d ms\s+PASS/);
  });
});
