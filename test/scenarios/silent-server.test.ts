// A server shaped unlike the shipped dialects (test/helpers/silent-server.ts: silent until the end of speech, a
// 6-character key in the query string, 401 on a wrong one), driven with the README's dialect for it, written as the
// protocol is (ready, ack and reply_start null): validate and try pass, a 50-device fleet PASSes with the server's own
// counters matching the tester's, a wrong key stops before any load naming 401, a build that stalls mid-reply FAILs.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startSilentServer, type SilentServer } from '../helpers/silent-server.ts';
import { latestRun, ROOT, runCli, type Metrics } from '../helpers/proc.ts';

const KEY = 'k3y-42';
const tmp = mkdtempSync(join(tmpdir(), 'wakestorm-silent-'));
const file = (name: string, body: string) => {
  const p = join(tmp, name);
  writeFileSync(p, body);
  return p;
};
const dialect = file(
  'quiet.json',
  /<!-- readme-dialect-silent:[^>]*-->\s*```json\n([\s\S]*?)```/.exec(
    readFileSync(join(ROOT, 'README.md'), 'utf8'),
  )![1]!,
);
const keyFile = file('key.txt', `${KEY}\n`);
const wrongKey = file('wrong.txt', 'nope-1\n');

interface Run {
  code: number | null;
  out: string;
  run: { verdict: string; slo_results: { name: string; status: string; culprits: string[] }[] };
  metrics: Metrics;
}

async function fleet(server: SilentServer, name: string, extra: string[] = []): Promise<Run> {
  const results = join(tmp, name);
  const r = await runCli(
    [
      'run',
      'smoke',
      '--devices',
      '50',
      '--duration',
      '20s',
      '--wake',
      'once:1s-4s',
      '--profile',
      'pi-assistant',
      '--dialect',
      dialect,
      '--token-file',
      keyFile,
      '--server-url',
      server.url,
      '--results',
      results,
      '--no-dashboard',
      ...extra,
    ],
    { timeoutMs: 150_000 },
  );
  const { run, metrics } = latestRun<Run['run']>(results);
  return { code: r.code, out: r.stdout + r.stderr, run, metrics };
}

const count = (r: Run, m: string) => r.metrics[m]?.values.count ?? 0;

describe('a server silent until the end of speech, with a key in the query string', () => {
  let healthy: SilentServer;
  let stalling: SilentServer;
  before(async () => {
    healthy = await startSilentServer({ key: KEY, thinkMs: 250, replyMs: 1000 });
    stalling = await startSilentServer({ key: KEY, thinkMs: 250, replyMs: 1000, stallMidReplyMs: 600 });
  });
  after(async () => {
    await healthy.close();
    await stalling.close();
  });

  it('validate accepts the dialect as the protocol is: ready, ack and reply_start null', async () => {
    const r = await runCli(['validate', dialect]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
  });

  it('try completes one conversation with the 6-character key and never prints it', async () => {
    const r = await runCli(['try', '--server-url', healthy.url, '--dialect', dialect, '--token-file', keyFile], {
      timeoutMs: 60_000,
    });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /response_latency = \d+ ms/);
    assert.match(r.stdout, /\[reply_end\]/);
    assert.ok(!(r.stdout + r.stderr).includes(KEY), 'the key is never printed');
  });

  it('a wrong key stops try and run before any load, in one line naming 401, the key hidden', async () => {
    for (const args of [
      ['try', '--server-url', healthy.url, '--dialect', dialect, '--token-file', wrongKey],
      [
        'run',
        'smoke',
        '--profile',
        'pi-assistant',
        '--server-url',
        healthy.url,
        '--dialect',
        dialect,
        '--token-file',
        wrongKey,
        '--results',
        tmp,
      ],
    ]) {
      const before = healthy.counts.refused401;
      const r = await runCli(args, { timeoutMs: 60_000 });
      assert.equal(r.code, 2, `${args[0]}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, /refused the upgrade with HTTP 401/);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.ok(!(r.stdout + r.stderr).includes('nope-1'), 'the key is never printed');
      assert.equal(healthy.counts.refused401, before + 1, 'one upgrade, then nothing');
    }
  });

  it('50 devices PASS, and the tester counts what the server counted', async () => {
    const before = { ...healthy.counts };
    const r = await fleet(healthy, 'healthy');
    assert.equal(r.code, 0, r.out);
    assert.equal(r.run.verdict, 'pass');
    const turns = healthy.counts.turns - before.turns;
    assert.equal(turns, 50, 'the server heard every wake');
    assert.equal(count(r, 'wakes'), 50);
    assert.equal(count(r, 'wakes_without_ack'), 50);
    assert.equal(count(r, 'sessions_completed'), healthy.counts.replies - before.replies);
    assert.equal(healthy.counts.stops - before.stops, 50, 'every device ended its speech');
    // No acknowledgement to time: n/a, said so; the wait for the reply is timed from the end of speech.
    assert.equal(r.run.slo_results.find((s) => s.name === 'wake_ack_p95')!.status, 'n/a');
    const resp = r.metrics['response_latency{chaos:steady}']!.values;
    assert.ok(resp['p(50)']! >= 250 && resp['p(50)']! < 900, `response p50 ${resp['p(50)']}`);
    assert.equal(count(r, 'early_replies'), 0);
  });

  it('a build that stalls 600 ms mid-reply FAILs on the playback the user heard', async () => {
    const r = await fleet(stalling, 'stalling');
    assert.equal(r.code, 99, r.out);
    const failed = r.run.slo_results.filter((s) => s.status === 'fail').map((s) => s.name);
    assert.ok(
      failed.includes('reply_stutter_rate') || failed.includes('playback_stall_p99'),
      `failed: ${failed.join(', ')}`,
    );
  });
});
