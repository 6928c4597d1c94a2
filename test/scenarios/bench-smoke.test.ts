// Keeps the benches from rotting: their quick modes run end to end and print their numbers (no speed assertions).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ROOT } from '../helpers/proc.ts';

// Bench results go to a temporary folder: npm test leaves nothing in the user's results/.
const BENCH_RESULTS = mkdtempSync(join(tmpdir(), 'wakestorm-bench-'));

function npmRun(script: string, env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn('npm', ['run', '--silent', script], { cwd: ROOT, env: { ...process.env, BENCH_RESULTS, ...env } });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    p.on('close', (code) => resolve({ code, out }));
  });
}

describe('bench smoke', () => {
  it('bench:server (quick) prints RSS, CPU and event-loop lag', async () => {
    const r = await npmRun('bench:server', { BENCH_QUICK: '1' });
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /200 idle\s+rss=\d+(\.\d+)? MiB\s+cpu=\d+(\.\d+)?% of a core\s+lag_p99=\d+(\.\d+)? ms/);
    const json = /written: (\S+bench\.json)/.exec(r.out)![1]!;
    const rows = JSON.parse(readFileSync(json, 'utf8')).rows as { phase: string; sessions_completed?: number }[];
    assert.equal(rows.length, 4);
    // Both dialects are measured: wakestorm PCM sessions, then xiaozhi Opus channels.
    assert.match(rows[2]!.phase, /voice sessions/);
    assert.match(rows[3]!.phase, /xiaozhi Opus sessions/);
  });

  it('bench fidelity (quick) compares the devices against injected truths', async () => {
    const r = await npmRun('bench', { BENCH_QUICK: '1', BENCH_ONLY: 'fidelity' });
    assert.equal(r.code, 0, r.out);
    const json = JSON.parse(readFileSync(/written: (\S+bench\.json)/.exec(r.out)![1]!, 'utf8'));
    const row = json.fidelity[0];
    assert.equal(row.truth.response_ms, 700);
    // A quick run only checks the pipeline is sound: measured values exist and sit near the truths.
    assert.ok(Math.abs(row.error_p50_ms.response) < 50, JSON.stringify(row));
    assert.ok(Math.abs(row.error_p50_ms.wake_ack) < 50, JSON.stringify(row));
    assert.ok(row.samples.reconnect === 20, JSON.stringify(row));
  });

  it('bench cost (quick) prices a device-model audio frame against a bare k6 timer', async () => {
    const r = await npmRun('bench', { BENCH_QUICK: '1', BENCH_ONLY: 'cost' });
    assert.equal(r.code, 0, r.out);
    const c = JSON.parse(readFileSync(/written: (\S+bench\.json)/.exec(r.out)![1]!, 'utf8')).cost;
    // 200 streams of 20 ms frames: 10,000 frames/s when the model keeps real-time pace, and every price is positive.
    assert.ok(Math.abs(c.frames_per_s - 10_000) < 1000, JSON.stringify(c));
    assert.equal(c.slips, 0, JSON.stringify(c));
    assert.ok(c.us_per_timer > 0 && c.us_per_frame > 0, JSON.stringify(c));
    assert.match(r.out, /µs per device-model frame/);
  });

  it('bench:peers (quick) runs wakestorm and its peers against one server, each holding every device', async () => {
    const r = await npmRun('bench:peers', { BENCH_QUICK: '1' });
    assert.equal(r.code, 0, r.out);
    const rows = JSON.parse(readFileSync(/written: (\S+peers\.json)/.exec(r.out)![1]!, 'utf8')) as {
      tester: string;
      load: string;
      devices: number;
      server_connections: { min: number; max: number } | null;
      kib_per_device: number | null;
      processes: number;
      rss_avg_mib: number | null;
      by_process: { name: string; rss_avg_mib: number; cpu_pct: number }[];
      note: string;
    }[];
    const ran = rows.filter((x) => x.note !== 'not installed here');
    // wakestorm at both loads, through Toxiproxy too, plain k6 and the hand-written script always; Artillery and
    // Tsung where they are.
    for (const [tester, load] of [
      [/^wakestorm at its defaults/, 'idle'],
      [/^wakestorm through Toxiproxy/, 'idle'],
      [/^plain k6/, 'idle'],
      [/^hand-written/, 'idle'],
      [/^wakestorm at its defaults/, 'talking'],
      [/^hand-written/, 'talking'],
    ] as const)
      assert.ok(
        ran.some((x) => tester.test(x.tester) && x.load === load),
        `${tester} ${load} ran: ${JSON.stringify(rows)}`,
      );
    for (const x of ran) {
      assert.equal(x.note, '', `${x.tester} ${x.load}: ${x.note}`);
      assert.equal(x.server_connections?.min, x.devices, `${x.tester} ${x.load} held every device`);
      assert.ok((x.kib_per_device ?? 0) > 0, `${x.tester}: ${x.kib_per_device} KiB/device`);
    }
    // Every process of the tester is counted: wakestorm's CLI, k6 and its engine at least.
    const ours = ran.find((x) => /^wakestorm at its defaults/.test(x.tester))!;
    assert.ok(ours.processes >= 3);
    // …and each apart by name, the split adding up to the row (both averaged over the same hold, a second apart).
    const names = ours.by_process.map((p) => p.name);
    for (const n of ['node', 'k6', 'wakestorm-engin']) assert.ok(names.includes(n), `${n} in ${names.join(', ')}`);
    const sum = ours.by_process.reduce((a, p) => a + p.rss_avg_mib, 0);
    assert.ok(Math.abs(sum - ours.rss_avg_mib!) < ours.rss_avg_mib! * 0.15, `split ${sum} vs row ${ours.rss_avg_mib}`);
    assert.match(r.out, /RSS per idle device at 300/);
  });
});
