// The end of a run is judged as the end (issue 40, case 1): a healthy server PASSes short runs whose wakes come near
// the end, on both engines. A session the end cut is counted open at the end (sessions_open_at_end), a wake still
// waiting for its acknowledgement likewise, and neither is a lost session or a missing reply. But only while young:
// a server that acknowledges and never answers, or never acknowledges, still FAILs a short run (END_DUE_MS).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { startBuggyServer, type Bug } from '../helpers/buggy-server.ts';
import { runCli } from '../helpers/proc.ts';

const results = mkdtempSync(join(tmpdir(), 'wakestorm-run-end-'));

const SWEEP: [engine: string, devices: number, duration: string, wake: string][] = [
  ['native', 2, '10s', 'once:7s-8s'],
  ['k6', 2, '10s', 'once:7s-8s'],
  ['native', 20, '15s', 'once:12s-14s'],
  ['native', 10, '5s', 'once:3s-4s'],
];

describe('short runs that end while sessions are open, against a healthy server', () => {
  for (const [engine, devices, duration, wake] of SWEEP)
    it(`${devices} devices, ${duration}, wake ${wake}, ${engine} engine: PASS, the open sessions counted`, async () => {
      const root = join(results, `${engine}-${devices}-${duration}`);
      const r = await runCli(
        [
          'run',
          'smoke',
          '--devices',
          String(devices),
          '--duration',
          duration,
          '--wake',
          wake,
          '--engine',
          engine,
          '--results',
          root,
          '--no-dashboard',
          '--quiet',
        ],
        { timeoutMs: 120_000 },
      );
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /VERDICT: PASS/);
      const dir = join(root, readlinkSync(join(root, 'latest')));
      const m = (
        JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8')) as {
          metrics: Record<string, { values: Record<string, number> } | undefined>;
        }
      ).metrics;
      const c = (n: string) => m[n]?.values.count ?? 0;
      // The wakes came (some may fall past the end: the fleet's start takes a moment); none is lost to the end.
      assert.ok(c('wakes') > 0, 'no wake');
      assert.ok(c('sessions_open_at_end') + c('wakes_open_at_end') > 0, 'the end cut something, as meant');
      assert.equal(c('sessions_dropped'), 0);
    });
});

// Wakes at 1-2 s of a 10 s run: every answer was due long before the end.
const SHORT_FAILS: [engine: string, bug: Bug, slo: string, why: RegExp][] = [
  ['native', 'slow-reply', 'response_p95', /sessions started, 0 replies heard/],
  ['k6', 'slow-reply', 'response_p95', /sessions started, 0 replies heard/],
  ['native', 'no-wake-ack', 'wake_success', /wakes, 0 judged/],
  ['k6', 'no-wake-ack', 'wake_ack_p95', /wakes, 0 acknowledged/],
];

describe('short runs against a server that never answers: FAIL, not open at the end', () => {
  for (const [engine, bug, slo, why] of SHORT_FAILS)
    it(`${bug}, ${engine} engine: ${slo} fails`, async () => {
      // slow-reply holds each reply back a minute: past the run's end, as if never sent.
      const server = await startBuggyServer({ bugs: [bug], slowReplyMs: 60_000, upstream: { sttMs: 50, llmMs: 50 } });
      const root = join(results, `fail-${engine}-${bug}`);
      try {
        const r = await runCli(
          ['run', 'smoke', '--devices', '3', '--duration', '10s', '--wake', 'once:1s-2s', '--engine', engine].concat([
            '--server-url',
            server.url,
            '--results',
            root,
            '--no-dashboard',
            '--quiet',
          ]),
          { timeoutMs: 120_000 },
        );
        assert.equal(r.code, 99, r.stdout + r.stderr);
        const run = JSON.parse(readFileSync(join(root, readlinkSync(join(root, 'latest')), 'run.json'), 'utf8')) as {
          slo_results: { name: string; status: string; why: string }[];
        };
        const row = run.slo_results.find((x) => x.name === slo)!;
        assert.equal(row.status, 'fail', JSON.stringify(run.slo_results));
        assert.match(row.why, why);
      } finally {
        await server.close();
      }
    });
});
