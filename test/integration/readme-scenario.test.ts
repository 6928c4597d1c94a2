// The README's "Write your own scenario" example runs as written: copied from the README into scenarios/, run under
// k6 by `wakestorm run`, and judged (PASS or FAIL, never a script error or INVALID).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ROOT, runCli } from '../helpers/proc.ts';

describe('the README', () => {
  it('has a scenario example that runs as written', async () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const m = /<!-- readme-scenario:[^>]*-->\s*```ts\n([\s\S]*?)```/.exec(readme);
    assert.ok(m, 'the README marks its scenario example');
    const code = m[1]!;
    assert.ok(code.trim().split('\n').length <= 25, 'a short scenario');
    const name = /name: '([a-z-]+)'/.exec(code)![1]!;
    // The example imports ./lib/…: it lives in scenarios/ for the run, and goes again after it.
    const file = join(ROOT, 'scenarios', `.readme-${process.pid}-${name}.ts`);
    const results = mkdtempSync(join(tmpdir(), 'wakestorm-readme-'));
    writeFileSync(file, code);
    try {
      const r = await runCli(['run', file, '--results', results, '--server-arg', '--stt-ms=50'], {
        timeoutMs: 120_000,
      });
      assert.ok(r.code === 0 || r.code === 99, `exit ${r.code}: ${r.stdout}${r.stderr}`);
      const run = JSON.parse(readFileSync(join(results, readlinkSync(join(results, 'latest')), 'run.json'), 'utf8'));
      assert.equal(run.resolved.devices, 20);
      assert.deepEqual(
        run.resolved.profile_mix.map((p: { profile: string }) => p.profile),
        ['my-badge', 'recommended'],
      );
      assert.equal(run.resolved.timeline.steps[0].fault, 'cut');
      assert.equal(run.resolved.wake.mode, 'poisson');
      assert.equal(run.slos.find((s: { name: string }) => s.name === 'response_p95').target, 1000);
    } finally {
      rmSync(file, { force: true });
    }
  });
});
