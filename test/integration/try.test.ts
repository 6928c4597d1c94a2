// `wakestorm try`, `validate` and `init` as a new user runs them: one conversation against the reference server in both
// dialects and against the README's user-dialect server, a dialect with a typo shown stalling at the step it broke,
// files checked without a run, and bad input refused in one line with exit 2.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PROFILES } from '../../core/profiles.ts';
import { startVoiceServer, type VoiceServer } from '../../server/server.ts';
import { startAcmeServer, type AcmeServer } from '../helpers/acme-server.ts';
import { makePki, startTlsFront } from '../helpers/tls-front.ts';
import { ROOT, runCli } from '../helpers/proc.ts';

const tmp = mkdtempSync(join(tmpdir(), 'wakestorm-try-'));
const file = (name: string, body: string) => {
  const p = join(tmp, name);
  writeFileSync(p, body);
  return p;
};
const readmeDialect = () =>
  /<!-- readme-dialect:[^>]*-->\s*```json\n([\s\S]*?)```/.exec(readFileSync(join(ROOT, 'README.md'), 'utf8'))![1]!;
const oneLine = (s: string) => s.trim().split('\n').length === 1;

describe('wakestorm try', () => {
  let server: VoiceServer;
  let acme: AcmeServer;
  before(async () => {
    server = await startVoiceServer({ port: 0, sttMs: 40, llmMs: 40, ttsMs: 40 });
    acme = await startAcmeServer({ apiKey: 'acme-key-1234', thinkMs: 60 });
  });
  after(async () => {
    await server.close();
    await acme.close();
  });

  for (const dialect of ['wakestorm', 'xiaozhi']) {
    it(`completes one ${dialect} conversation with the reference server, naming each step and timing`, async () => {
      const r = await runCli(['try', '--server-url', server.wsUrl, '--dialect', dialect], { timeoutMs: 60_000 });
      assert.equal(r.code, 0, r.stdout + r.stderr);
      for (const step of ['[ready]', '[reply_start]', '[reply_end]'])
        assert.ok(r.stdout.includes(step), `${step} in\n${r.stdout}`);
      if (dialect === 'wakestorm')
        assert.ok(r.stdout.includes('[ack]') && r.stdout.includes('[session_end]'), r.stdout);
      // Voice-to-voice, endpointing included: 300 ms of the server's window plus 120 ms of pipeline at least.
      const resp = Number(/response_latency = (\d+) ms/.exec(r.stdout)?.[1]);
      // (415: each of the four timers may fire up to a ms early against the whole-ms clock.)
      assert.ok(resp >= 415 && resp < 700, `response_latency ${resp} ms\n${r.stdout}`);
      assert.match(r.stdout, /endpointing_latency = \d+ ms/);
      assert.match(r.stdout, /the conversation completed/);
    });
  }

  it('runs the device a run runs: the native engine by default, the k6 device with --engine k6, the same steps', async () => {
    const steps = (out: string) => [...out.matchAll(/←.*\[([a-z_ ]+)\]$/gm)].map((m) => m[1]);
    const native = await runCli(['try', '--server-url', server.wsUrl], { timeoutMs: 60_000 });
    const k6 = await runCli(['try', '--server-url', server.wsUrl, '--engine', 'k6'], { timeoutMs: 60_000 });
    assert.equal(native.code, 0, native.stdout + native.stderr);
    assert.equal(k6.code, 0, k6.stdout + k6.stderr);
    // The engine's ids (try-0) are not the k6 device's (try-1): the engine's own start named the device.
    assert.match(native.stdout, /connect ws:\/\/[^ ]+\/ws\/try-0/);
    assert.match(k6.stdout, /connect ws:\/\/[^ ]+\/ws\/try-1/);
    assert.deepEqual(steps(native.stdout), steps(k6.stdout));
    assert.deepEqual(steps(native.stdout), [
      'ready',
      'ack',
      'transcript',
      'ignore',
      'reply_start',
      'reply_end',
      'session_end',
    ]);
  });

  it('a barge-in completes: the user interrupted the reply and the server stopped, no false stall', async () => {
    const barge = file('barge.json', JSON.stringify({ ...PROFILES.recommended, name: 'barge', barge_in_ms: 300 }));
    const r = await runCli(['try', '--server-url', server.wsUrl, '--profile', barge], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      /→ \{"type":"cancel"[\s\S]*barge_in_stop_time = \d+ ms[\s\S]*the conversation completed in (\d+) ms/,
    );
    // It ends when the barge-in is measured, not when try gives up (45 s).
    assert.ok(Number(/completed in (\d+) ms/.exec(r.stdout)![1]) < 15_000, r.stdout);
  });

  it("completes the README's user dialect against the server that speaks it", async () => {
    const d = file('acme.json', readmeDialect());
    const key = file('key.txt', 'acme-key-1234\n');
    const r = await runCli(['try', '--server-url', acme.url, '--dialect', d, '--token-file', key], {
      timeoutMs: 60_000,
    });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.ok(!r.stdout.includes('acme-key-1234'), 'the token is never printed');
    assert.match(r.stdout, /\[ack\][\s\S]*\[reply_start\][\s\S]*\[session_end\]/);
  });

  it('shows a matcher with a typo as the message that matched no step, and where the conversation stalled', async () => {
    const typo = readmeDialect().replace('"event": "speaking"', '"event": "speakin"');
    const d = file('acme-typo.json', typo);
    const key = file('key2.txt', 'acme-key-1234\n');
    const r = await runCli(['try', '--server-url', acme.url, '--dialect', d, '--token-file', key], {
      timeoutMs: 60_000,
    });
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stdout, /"event":"speaking"[^\n]*\[no step\]/);
    assert.match(r.stdout, /matches no step of dialect acme \(event speaking\)/);
    assert.match(r.stdout, /the session ended, but no reply audio was heard/);
  });

  it('talks TLS to a wss:// server with a private CA (--ca), on both engines; refuses its certificate without', async () => {
    const pki = makePki();
    const front = await startTlsFront(pki, Number(new URL(server.wsUrl).port));
    try {
      const url = `wss://localhost:${front.port}`;
      for (const engine of ['native', 'k6']) {
        const r = await runCli(['try', '--server-url', url, '--ca', pki.caPath, '--engine', engine], {
          timeoutMs: 60_000,
        });
        assert.equal(r.code, 0, r.stdout + r.stderr);
        assert.match(r.stdout, /connect wss:\/\/localhost:\d+\/ws\/try-\d/);
        assert.match(r.stdout, /the conversation completed/);
      }
      const refused = await runCli(['try', '--server-url', url]);
      assert.equal(refused.code, 2, refused.stdout + refused.stderr);
      assert.ok(oneLine(refused.stderr), refused.stderr);
      assert.match(refused.stderr, /TLS certificate was not accepted/);
      const skipped = await runCli(['try', '--server-url', url, '--insecure-tls'], { timeoutMs: 60_000 });
      assert.equal(skipped.code, 0, skipped.stdout + skipped.stderr);
    } finally {
      await front.close();
    }
  });

  it('refuses bad input in one line with exit 2', async () => {
    const cases = [
      ['try', '--server-url', 'http://127.0.0.1:1'],
      ['try', '--server-url', 'ws://example.com:80'],
      ['try', '--server-url', server.wsUrl, '--dialect', 'klingon'],
      ['try', '--server-url', server.wsUrl, '--backoff', 'sometimes'],
      ['try', '--server-url', server.wsUrl, '--timeline', 'flaky-wifi'],
      ['try', '--server-url', server.wsUrl, '--profile', 'nope'],
      ['try'],
    ];
    for (const args of cases) {
      const r = await runCli(args, { timeoutMs: 30_000 });
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.ok(oneLine(r.stderr), `${args.join(' ')}: ${r.stderr}`);
    }
  });
});

describe('wakestorm validate and init', () => {
  it('says what a valid file is, and lists every problem of a broken one with its path', async () => {
    const ok = await runCli([
      'validate',
      join(ROOT, 'core/dialects/xiaozhi.json'),
      join(ROOT, 'core/dialects/wakestorm.json'),
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /dialect xiaozhi is valid/);
    const broken = JSON.parse(readmeDialect());
    broken.recv.ack = { event: 'listening', id: '{wakeid}' };
    broken.audio.down.codec = 'mp3';
    const p = file('broken.json', JSON.stringify(broken));
    const r = await runCli(['validate', p]);
    assert.equal(r.code, 2);
    assert.ok(oneLine(r.stderr), r.stderr);
    assert.match(
      r.stderr,
      /2 problems: .*broken\.json\.recv\.ack\.id: unknown placeholder \{wakeid\}.*broken\.json\.audio\.down\.codec/,
    );
  });

  it('checks profiles against their dialect, timelines and SLO files, and refuses what is none of them', async () => {
    const prof = join(tmp, 'p.json');
    const made = await runCli(['init', 'profile', prof, '--from', 'xiaozhi-esp32']);
    assert.equal(made.code, 0, made.stderr);
    const again = await runCli(['init', 'profile', prof]);
    assert.equal(again.code, 2, 'never over an existing file');
    const p = JSON.parse(readFileSync(prof, 'utf8'));
    assert.equal(p.name, 'my-xiaozhi-esp32');
    const good = await runCli([
      'validate',
      prof,
      file('t.json', '[{"at":"1s","for":"2s","fault":"cut"}]'),
      file('s.json', '[{"name":"my_p50","metric":"response_latency","aggregation":"p(50)","op":"<","target":500}]'),
    ]);
    assert.equal(good.code, 0, good.stderr);
    assert.match(good.stdout, /profile my-xiaozhi-esp32 is valid and dialect xiaozhi has every step it takes/);
    assert.match(good.stdout, /timeline of 1 fault/);
    p.barge_in_ms = 300;
    p.dialect = join(ROOT, 'core/dialects/xiaozhi.json');
    const bargeNoAbort = JSON.parse(readFileSync(join(ROOT, 'core/dialects/xiaozhi.json'), 'utf8'));
    bargeNoAbort.send.abort = null;
    p.dialect = file('noabort.json', JSON.stringify(bargeNoAbort));
    const bad = await runCli(['validate', file('p2.json', JSON.stringify(p))]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /interrupts replies \(barge_in_ms\)/);
    const neither = await runCli(['validate', file('x.json', '{"hello":1}')]);
    assert.equal(neither.code, 2);
    assert.match(neither.stderr, /--as dialect\|profile\|timeline\|slo/);
  });
});
