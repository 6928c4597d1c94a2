// The floors of ARCHITECTURE.md, enforced: core/ imports nothing but core/ (no runtime), server/ and scenarios/ import
// core/ only (one runtime each: Node, k6), scripts/ imports those below it, bench/ and test/ sit on top; and no import
// circle anywhere. Reads every TypeScript file's imports; fails naming the file and the import.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';

const ROOT = resolve(import.meta.dirname, '..', '..');
/** Each folder's floor and the folders it may import from. */
const FLOORS: Record<string, string[]> = {
  core: ['core'],
  server: ['core', 'server'],
  scenarios: ['core', 'scenarios'],
  scripts: ['core', 'server', 'scripts'],
  bench: ['core', 'server', 'scenarios', 'scripts', 'bench'],
  test: ['core', 'server', 'scenarios', 'scripts', 'bench', 'test'],
};

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    if (f === 'node_modules' || f.startsWith('.')) return [];
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

const ALL = Object.keys(FLOORS).flatMap((d) => files(join(ROOT, d)));
const importsOf = (file: string) =>
  [
    ...readFileSync(file, 'utf8').matchAll(/^\s*(?:import|export)\s[^;]*?from\s+'([^']+)'|^\s*import\s+'([^']+)'/gm),
  ].map((m) => (m[1] ?? m[2])!);
const folderOf = (file: string) => relative(ROOT, file).split('/')[0]!;

describe('the floors of the codebase (ARCHITECTURE.md)', () => {
  it('no import points up a floor or across runtimes, and core/ imports no runtime', () => {
    const bad: string[] = [];
    for (const f of ALL) {
      const from = folderOf(f);
      for (const spec of importsOf(f)) {
        if (spec.startsWith('.')) {
          const to = folderOf(resolve(dirname(f), spec));
          if (!FLOORS[from]!.includes(to))
            bad.push(`${relative(ROOT, f)} imports ${spec} (${from} may import ${FLOORS[from]!.join(', ')})`);
        } else if (from === 'core')
          bad.push(`${relative(ROOT, f)} imports the runtime module ${spec}: core/ is runtime-free`);
        else if (from === 'server' && spec.startsWith('k6'))
          bad.push(`${relative(ROOT, f)} imports ${spec}: server/ is Node`);
        else if (from === 'scenarios' && (spec.startsWith('node:') || spec === 'ws'))
          bad.push(`${relative(ROOT, f)} imports ${spec}: scenarios/ is k6`);
      }
    }
    assert.deepEqual(bad, []);
  });

  it('no import circle', () => {
    const graph = new Map<string, string[]>();
    for (const f of ALL)
      graph.set(
        f,
        importsOf(f)
          .filter((s) => s.startsWith('.') && !/\.d\.ts$/.test(s))
          .map((s) => resolve(dirname(f), s)),
      );
    const state = new Map<string, 'open' | 'done'>();
    const circles: string[] = [];
    const visit = (f: string, path: string[]) => {
      if (state.get(f) === 'done') return;
      if (state.get(f) === 'open') {
        circles.push([...path.slice(path.indexOf(f)), f].map((p) => relative(ROOT, p)).join(' -> '));
        return;
      }
      state.set(f, 'open');
      for (const g of graph.get(f) ?? []) visit(g, [...path, f]);
      state.set(f, 'done');
    };
    for (const f of graph.keys()) visit(f, []);
    assert.deepEqual(circles, []);
  });
});
