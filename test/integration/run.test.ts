// `wakestorm run`, `report` and `compare` end to end, as a user runs them (`capacity`: test/scenarios/capacity.test.ts).
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { startVoiceServer } from '../../server/server.ts';
import { exited, runCli, spawnCli, waitFor } from '../helpers/proc.ts';

const results = mkdtempSync(join(tmpdir(), 'wakestorm-results-'));
const SMALL = ['--devices', '12', '--duration', '14s', '--wake', 'once:1s-3s', '--results', results];

describe('wakestorm run', () => {
  let healthyId = '';
  it('runs a scenario end to end on a healthy server: exit 0 and every result file', async () => {
    const args = ['--server-arg', '--stt-ms=50', '--server-arg', '--llm-ms 50', '--ramp', '1500ms'];
    const r = await runCli(['run', 'smoke', ...SMALL, ...args], { timeoutMs: 120_000 });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /VERDICT: PASS/);
    // The console: progress counts connected devices, no empty dashboard line, the last line names the report.
    assert.match(r.stdout, /devices connected \d+\/12/);
    assert.doesNotMatch(r.stdout, /web dashboard:/);
    assert.match(r.stdout.trim().split('\n').at(-1)!, /report: \S+\/report\.html$/);
    healthyId = readlinkSync(join(results, 'latest'));
    const dir = join(results, healthyId);
    for (const f of [
      'summary.json',
      'junit.xml',
      'events.json',
      'report.html',
      'server-metrics.txt',
      'run.json',
      'latency.svg',
      'connected.svg',
    ])
      assert.ok(existsSync(join(dir, f)), f);
    // k6's own output is kept whole: its end-of-test summary is the last thing it prints.
    // The CLI judges (it also sees processes and interrupts): k6's own summary prints the metrics, not a verdict.
    assert.match(readFileSync(join(dir, 'k6.log'), 'utf8'), /wakestorm smoke — device metrics/);
    assert.doesNotMatch(readFileSync(join(dir, 'k6.log'), 'utf8'), /VERDICT/);
    const run = JSON.parse(readFileSync(join(dir, 'run.json'), 'utf8'));
    assert.equal(run.exit_code, 0);
    assert.equal(run.verdict, 'pass');
    assert.equal(run.incomplete, false);
    assert.equal(run.parameters.DEVICES, '12');
    assert.equal(run.parameters.server_flags.sttMs, 50);
    assert.equal(run.resolved.ramp_ms, 1500);
    assert.equal(run.tools.k6, 'v2.2.0');
    assert.match(run.git_commit ?? '', /^[0-9a-f]{40}$|^$/);
    assert.ok(run.machine.cores >= 1);
    const summary = JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8'));
    assert.equal(summary.metrics.sessions_completed.values.count, 12);
    assert.match(readFileSync(join(dir, 'junit.xml'), 'utf8'), /tests="18" failures="0" errors="0" skipped="4"/);
    assert.equal(run.slo_results.find((x: { name: string }) => x.name === 'reconnect_p95').status, 'n/a');
    assert.match(
      readFileSync(join(dir, 'server-metrics.txt'), 'utf8'),
      /voice_sessions_total\{outcome="complete"\} 12/,
    );
    assert.match(readFileSync(join(dir, 'report.html'), 'utf8'), /<html/i);
    assert.match(readFileSync(join(dir, 'latency.svg'), 'utf8'), /^<svg/);
    assert.deepEqual(
      readdirSync(results).filter((f) => f.includes('.partial')),
      [],
      'no partial folder left',
    );
  });

  it('exits 99 on a slow server, and compare flags the regression; report prints the verdict again', async () => {
    const r = await runCli(['run', 'smoke', ...SMALL, '--server-arg', '--stt-ms=700', '--baseline', healthyId], {
      timeoutMs: 120_000,
    });
    assert.equal(r.code, 99, r.stdout + r.stderr);
    const slowId = readlinkSync(join(results, 'latest'));
    // The baseline, in the terminal and in the report: the same rows compare gives.
    assert.match(
      r.stdout,
      new RegExp(`against baseline ${healthyId}: worse beyond tolerance \\(10%\\): .*response_p95`),
    );
    const html = readFileSync(join(results, slowId, 'report.html'), 'utf8');
    assert.match(
      html,
      /<table id="baseline">.*<td>response_p95<\/td><td class="num">[\d.]+ ms<\/td><td class="num">[\d.]+ ms<\/td><td class="num">\+[\d.]+%<\/td><td class="fail">WORSE<\/td>/s,
    );
    const again = await runCli(['report', healthyId, '--baseline', healthyId, '--results', results]);
    assert.match(again.stdout, /no SLO worse beyond tolerance/);
    const noBase = await runCli(['run', 'smoke', ...SMALL, '--baseline', 'no-such-run']);
    assert.equal(noBase.code, 1);
    assert.match(noBase.stderr, /^wakestorm: no run 'no-such-run'/);
    assert.equal(readlinkSync(join(results, 'latest')), slowId, 'nothing ran');
    const cmp = await runCli(['compare', healthyId, slowId, '--results', results]);
    assert.equal(cmp.code, 1, cmp.stdout);
    assert.match(cmp.stdout, /response_p95\s+\d+\.\d ms\s+\d+\.\d ms\s+\+\d+\.\d%\s+WORSE/);
    assert.match(cmp.stdout, /REGRESSION: response_p95/);
    const same = await runCli(['compare', healthyId, healthyId, '--results', results]);
    assert.equal(same.code, 0, same.stdout);
    const rep = await runCli(['report', slowId, '--results', results]);
    assert.equal(rep.code, 99);
    assert.match(rep.stdout, /response_p95\s+p\(95\) < 800 ms\s+\d+\.\d ms\s+FAIL/);
    assert.match(rep.stdout, /VERDICT: FAIL \(response_p95\)/);
    const missing = await runCli(['report', 'no-such-run', '--results', results]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no run 'no-such-run'/);
  });

  it("charts a user's server's own metrics over the run with --server-metrics", async () => {
    const server = await startVoiceServer({ port: 0, sttMs: 40, llmMs: 40, ttsMs: 40 });
    try {
      const r = await runCli(
        ['run', 'smoke', ...SMALL, '--server-url', server.wsUrl, '--server-metrics', `${server.httpUrl}/metrics`],
        { timeoutMs: 120_000 },
      );
      assert.equal(r.code, 0, r.stdout + r.stderr);
      const dir = join(results, readlinkSync(join(results, 'latest')));
      const rows = readFileSync(join(dir, 'server-samples.csv'), 'utf8').trim().split('\n').slice(1);
      assert.ok(rows.length >= 4, `${rows.length} reads`);
      // Its own count of the fleet, read while the run lasted.
      assert.ok(Math.max(...rows.map((l) => Number(l.split(',')[4]))) >= 12, rows.join(' | '));
      assert.ok(readFileSync(join(dir, 'report.html'), 'utf8').includes('id="chart-server"'));
    } finally {
      await server.close();
    }
  });

  it('rejects bad flags with one line before anything starts', async () => {
    for (const [args, re] of [
      [['run', 'smoke', '--devices', 'many'], /--devices must be an integer/],
      [['run', 'nope'], /no scenario 'nope'/],
      [['run', 'smoke', '--profile', 'esp32-hotpin:70,bogus:30'], /unknown profile "bogus"/],
      [
        ['run', 'smoke', '--timeline', 'half-open', '--duration', '30s'],
        /entry 0 \(blackhole\): ends at 75s, after the run's DURATION of 30s/,
      ],
      [['run', 'smoke', '--slo', 'fast'], /--slo 'fast' must be name=number/],
      [['run', 'smoke', '--server-arg', '--stt-ms=soon'], /--stt-ms must be an integer/],
      [['run', 'smoke', '--toxiproxy-shards', '0'], /--toxiproxy-shards must be between 1 and 16, got 0/],
      // --direct starts no Toxiproxy: a timeline's network faults would reach no device (a false PASS).
      [
        ['run', 'flaky-network', '--direct'],
        /--direct connects the devices to the server itself, so the timeline's network faults \(latency, cut\)/,
      ],
      [
        ['run', 'smoke', '--ramp', '20s', '--duration', '10s'],
        /--ramp \(20s\) must be shorter than --duration \(10s\)/,
      ],
      [
        ['run', 'smoke', '--server-metrics', 'ftp://127.0.0.1/metrics'],
        /--server-metrics .* must be http:\/\/ or https/,
      ],
      // 192.0.2.0/24 is TEST-NET-1 (RFC 5737): refused before anything is sent.
      [['run', 'smoke', '--server-metrics', 'http://192.0.2.7:9100/metrics'], /is not loopback: set ALLOW_REMOTE=1/],
      [['run', 'smoke', '--server-metrics', 'http://127.0.0.1:1/metrics'], /--server-metrics .* did not answer/],
    ] as [string[], RegExp][]) {
      const r = await runCli([...args, '--results', results]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
  });

  it('on SIGINT writes what exists, marked incomplete, and leaves nothing running', async () => {
    const p = spawnCli(['run', 'smoke', '--devices', '10', '--duration', '60s', '--wake', 'off', '--results', results]);
    await waitFor(() => /running \(0?m?0?[3-9]/.test(p.output()) || /k6 v2/.test(p.output()), 60_000, 'k6 running');
    await new Promise((r) => setTimeout(r, 4000));
    p.kill('SIGINT');
    assert.equal((await exited(p, 60_000)) !== null, true);
    const id = readlinkSync(join(results, 'latest'));
    const run = JSON.parse(readFileSync(join(results, id, 'run.json'), 'utf8'));
    assert.equal(run.incomplete, true);
    assert.ok(existsSync(join(results, id, 'summary.json')), 'k6 still wrote its summary');
    const { execFileSync } = await import('node:child_process');
    const ps = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' });
    assert.doesNotMatch(ps, new RegExp(`RESULTS_DIR=${results}`), 'no k6 left');
    assert.doesNotMatch(
      ps
        .split('\n')
        .filter((l) => l.includes('toxiproxy-server') && !l.includes('18474'))
        .join('\n'),
      /toxiproxy-server -host 127\.0\.0\.1 -port \d+/,
    );
  });
});
