// `wakestorm run --direct` starts nothing the run does not use (issue 39): no Toxiproxy process at all, the devices on
// the server itself, and a timeline of server restarts (which needs no Toxiproxy) still applied and judged.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ROOT } from '../helpers/proc.ts';

const results = mkdtempSync(join(tmpdir(), 'wakestorm-direct-'));

/** Every process whose command line names Toxiproxy's server, by pid. */
const toxiproxies = () =>
  execFileSync('ps', ['-eo', 'pid=,args='], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => /toxiproxy-server/.test(l));

describe('run --direct', () => {
  it('starts no Toxiproxy, and a server-restart timeline is still applied', async () => {
    const before = toxiproxies().length;
    const p = spawn(
      process.execPath,
      [join(ROOT, 'bin/wakestorm.mjs'), 'run', 'smoke', '--devices', '10', '--duration', '30s', '--direct'].concat([
        '--timeline',
        'server-restart',
        '--results',
        results,
        '--no-dashboard',
        '--quiet',
      ]),
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    let most = 0;
    const watch = setInterval(() => (most = Math.max(most, toxiproxies().length - before)), 500);
    const code = await new Promise<number | null>((res) => p.once('exit', res));
    clearInterval(watch);
    assert.equal(code, 0, out);
    assert.equal(most, 0, 'a Toxiproxy process ran during a --direct run');
    const run = JSON.parse(readFileSync(join(results, readlinkSync(join(results, 'latest')), 'run.json'), 'utf8'));
    assert.equal(run.parameters.direct, true);
    assert.equal(run.processes.toxiproxy, undefined);
    const events = JSON.parse(
      readFileSync(join(results, readlinkSync(join(results, 'latest')), 'events.json'), 'utf8'),
    ) as { applied?: { fault: string; ok: boolean }[] };
    const applied = (events.applied ?? []).filter((e) => e.fault === 'server-restart');
    assert.ok(applied.length >= 2 && applied.every((e) => e.ok), JSON.stringify(events));
  });
});
