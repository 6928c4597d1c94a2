// The bundle k6 runs for a shipped scenario (scripts/scenario-bundle.ts) is that scenario: k6 reads the same options
// from it as from the TypeScript sources, and the files it opens by path are found from the bundle as from the sources.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { k6ScriptFor } from '../../scripts/scenario-bundle.ts';
import { ROOT } from '../../scripts/run.ts';
import { k6Env, requireTools } from '../../scripts/tools.ts';

const inspect = (script: string, vars: string[] = []) =>
  JSON.parse(
    execFileSync(requireTools().k6, ['inspect', ...vars, script], {
      cwd: ROOT,
      env: k6Env({}),
      timeout: 60_000,
    }).toString(),
  ) as unknown;

describe('scenario bundle', () => {
  const shipped = readdirSync(join(ROOT, 'scenarios')).filter((f) => f.endsWith('.ts'));

  it('gives k6 the options of every shipped scenario, the k6 device and the native engine alike', async () => {
    assert.ok(shipped.length >= 6, shipped.join(', '));
    for (const f of shipped) {
      const src = join(ROOT, 'scenarios', f);
      const bundle = await k6ScriptFor(src, ROOT);
      assert.notEqual(bundle, src, `${f}: no bundle`);
      assert.match(readFileSync(bundle, 'utf8'), /^const __wakestormResolve/);
      for (const vars of [[], ['-e', 'ENGINE_URL=ws://127.0.0.1:1/control', '-e', 'DEVICES=3000']])
        assert.deepEqual(inspect(bundle, vars), inspect(src, vars), `${f} ${vars.join(' ')}`);
    }
  });

  it('leaves a scenario that is not shipped as it is', async () => {
    const other = join(ROOT, 'test', 'helpers', 'x.ts');
    assert.equal(await k6ScriptFor(other, ROOT), other);
  });
});
