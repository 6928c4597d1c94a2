// The fleet's default layout on the native engine (core/run-config.ts defaultDevicesPerVu: a few VUs that relay the
// engine's records, instead of 50 devices per VU sized for the k6 device) changes what the tester costs, not what it
// measures (issue 39): the same seeded fleet at the old layout and the new one gives the same verdict, the same counts
// and the same latencies.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { defaultDevicesPerVu } from '../../core/run-config.ts';
import { runCli } from '../helpers/proc.ts';

const results = mkdtempSync(join(tmpdir(), 'wakestorm-layout-'));

interface Run {
  verdict: string;
  resolved: { devices_per_vu: number };
  metrics: Record<string, { values: Record<string, number> } | undefined>;
}

async function run(name: string, extra: string[]): Promise<Run> {
  const root = join(results, name);
  const r = await runCli(
    ['run', 'smoke', '--devices', '300', '--duration', '20s', '--wake', 'once:2s-8s', '--seed', 'layout'].concat(
      ['--results', root, '--no-dashboard', '--quiet'],
      extra,
    ),
    { timeoutMs: 180_000 },
  );
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const dir = join(root, readlinkSync(join(root, 'latest')));
  const run = JSON.parse(readFileSync(join(dir, 'run.json'), 'utf8')) as Run;
  run.metrics = (JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8')) as Run).metrics;
  return run;
}

describe('the default layout on the native engine', () => {
  it('measures what 50 devices per VU measures', async () => {
    assert.equal(defaultDevicesPerVu(300, true), 75, 'the new default is another layout than the old');
    const old = await run('old', ['--devices-per-vu', '50']);
    const now = await run('new', []);
    assert.equal(old.resolved.devices_per_vu, 50);
    assert.equal(now.resolved.devices_per_vu, 75);
    assert.equal(now.verdict, old.verdict);
    const v = (r: Run, m: string, k: string) => r.metrics[m]?.values[k] ?? 0;
    for (const m of ['devices_started', 'wakes', 'sessions_started', 'sessions_completed', 'links_up'])
      assert.equal(v(now, m, 'count'), v(old, m, 'count'), m);
    assert.equal(v(now, 'connect_success', 'passes'), v(old, 'connect_success', 'passes'));
    assert.equal(v(now, 'response_latency', 'count'), v(old, 'response_latency', 'count'));
    // The server's own pacing (stt + llm) dominates: the same medians within the box's noise.
    for (const m of ['response_latency', 'wake_ack_latency'])
      assert.ok(
        Math.abs(v(now, m, 'med') - v(old, m, 'med')) < 20,
        `${m} median ${v(now, m, 'med')} vs ${v(old, m, 'med')}`,
      );
  });
});
