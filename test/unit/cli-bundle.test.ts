// The bin runs the CLI from an esbuild bundle (scripts/cli-bundle.mjs): it must be the CLI the sources are (same answers,
// a user's .ts dialect still loads), keyed by the source so an edit rebuilds it, and keep the chart libraries out of
// what loads while k6 runs.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { buildCliBundle, cliSourceHash } from '../../scripts/cli-bundle.mjs';

const ROOT = new URL('../../', import.meta.url).pathname;

test('the cache key follows the bundled sources and nothing else', () => {
  const root = mkdtempSync(join(tmpdir(), 'wakestorm-bundle-key-'));
  try {
    const put = (p: string, text: string) => {
      mkdirSync(dirname(join(root, p)), { recursive: true });
      writeFileSync(join(root, p), text);
    };
    for (const p of ['scripts/wakestorm.ts', 'core/a.ts', 'core/dialects/x.json', 'server/main.ts'])
      put(p, `// ${p}\n`);
    put('scripts/cli-bundle.mjs', '// options\n');
    put('package.json', '{}\n');
    const h0 = cliSourceHash(root);
    put('docs/notes.md', 'not bundled\n');
    put('bin/wakestorm.mjs', '// the bin, not bundled\n');
    assert.equal(cliSourceHash(root), h0, 'a file outside the bundle changed the key');
    put('core/a.ts', '// edited\n');
    const h1 = cliSourceHash(root);
    assert.notEqual(h1, h0, 'an edit of core/ kept the key');
    put('core/dialects/x.json', '{"edited":true}\n');
    const h2 = cliSourceHash(root);
    assert.notEqual(h2, h1, 'an edit of a shipped JSON kept the key');
    put('scripts/cli-bundle.mjs', '// other build options\n');
    assert.notEqual(cliSourceHash(root), h2, 'new build options kept the key');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('the bundle is the CLI: same answers as the sources, .ts dialects load, charts only when drawn', async () => {
  // Inside node_modules, as the bin keeps it: its package imports resolve from there.
  const out = mkdtempSync(join(ROOT, 'node_modules', '.cache', 'bundle-test-'));
  try {
    await buildCliBundle(out);
    const entry = join(out, 'wakestorm.mjs');
    const cli = (args: string[]) => spawnSync(process.execPath, [entry, ...args], { encoding: 'utf8', cwd: ROOT });
    const src = (args: string[]) =>
      spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts', 'wakestorm.ts'), ...args], {
        encoding: 'utf8',
        cwd: ROOT,
      });
    const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
    assert.equal(cli(['--version']).stdout.trim(), version);
    // One command that reads shipped files found from import.meta (ROOT): the same text either way.
    const a = cli(['validate', 'core/dialects/xiaozhi.json', 'core/dialects/openai-realtime.json']);
    const b = src(['validate', 'core/dialects/xiaozhi.json', 'core/dialects/openai-realtime.json']);
    assert.equal(a.status, 0, a.stderr);
    assert.equal(a.stdout, b.stdout);
    // A user's TypeScript dialect: loaded (then refused for what it says, not for being TypeScript).
    const dir = mkdtempSync(join(tmpdir(), 'wakestorm-ts-dialect-'));
    writeFileSync(join(dir, 'package.json'), '{"type":"module"}\n');
    writeFileSync(join(dir, 'mine.ts'), 'const name: number = 7;\nexport default { name };\n');
    const r = cli(['run', 'smoke', '--dialect', join(dir, 'mine.ts'), '--server-url', 'ws://127.0.0.1:1']);
    rmSync(dir, { recursive: true, force: true });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /mine\.ts\.name: must be a lowercase name/);
    // The chart libraries load with the report, after k6: no static import of them from the entry's graph.
    const statics = (f: string) => [
      ...readFileSync(join(out, f), 'utf8').matchAll(/^import\s[^;]*?from\s*"([^"]+)"/gm),
    ];
    const seen = new Set<string>();
    const queue = ['wakestorm.mjs'];
    while (queue.length) {
      for (const [, spec] of statics(queue.pop()!)) {
        assert.ok(!/^vega/.test(spec!), `${spec} is loaded at start`);
        if (spec!.startsWith('./') && !seen.has(spec!)) {
          seen.add(spec!);
          queue.push(spec!.slice(2));
        }
      }
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
