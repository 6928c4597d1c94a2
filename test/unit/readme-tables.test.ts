// The README's generated tables and lists match the code they describe.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { DEVICE_METRICS } from '../../core/metric-names.ts';
import { profileTable } from '../../scripts/doc-tables.ts';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

describe('README against the code', () => {
  it('has the table of every shipped profile as core/profiles.ts has them (npx tsx scripts/doc-tables.ts)', () => {
    assert.ok(
      readme.includes(profileTable()),
      'README profile table is stale: regenerate it with npx tsx scripts/doc-tables.ts',
    );
  });

  it("'What is here' has a row for every top-level folder and every docs page, and names real npm scripts", () => {
    const root = new URL('../../', import.meta.url);
    const section = readme.slice(
      readme.indexOf('## What is here'),
      readme.indexOf('\n## ', readme.indexOf('## What is here') + 1),
    );
    const rows = [...section.matchAll(/^\| `([^`]+)\/` \|/gm)].map((m) => m[1]!);
    const folders = readdirSync(root, { withFileTypes: true })
      .filter((d) => d.isDirectory() && !d.name.startsWith('.') && !['node_modules', 'results'].includes(d.name))
      .map((d) => d.name);
    assert.deepEqual([...rows].sort(), [...folders].sort(), 'a folder without a row, or a row without a folder');
    for (const page of readdirSync(new URL('docs/', root)).filter((f) => f.endsWith('.md')))
      assert.ok(section.includes(`docs/${page}`), `docs/${page} is not in 'What is here'`);
    const scripts = Object.keys(
      (JSON.parse(readFileSync(new URL('package.json', root), 'utf8')) as { scripts: Record<string, string> }).scripts,
    );
    for (const m of readme.matchAll(/npm run ([a-z:]+)/g)) assert.ok(scripts.includes(m[1]!), `npm run ${m[1]}`);
  });

  it('names every device metric', () => {
    const missing = Object.keys(DEVICE_METRICS).filter((m) => !readme.includes(`\`${m}\``));
    assert.deepEqual(missing, []);
  });
});

describe('BENCHMARKS.md against its sources', () => {
  it('carries bench/LIMITS.md whole: the bench appends it on every render, so prose written only into BENCHMARKS.md is lost', () => {
    const benchmarks = readFileSync(new URL('../../BENCHMARKS.md', import.meta.url), 'utf8');
    const limits = readFileSync(new URL('../../bench/LIMITS.md', import.meta.url), 'utf8');
    assert.ok(
      benchmarks.includes(limits.trimEnd()),
      "BENCHMARKS.md's 'What limits it' differs from bench/LIMITS.md: edit LIMITS.md, then BENCH_RENDER (bench/index.ts)",
    );
  });
});
