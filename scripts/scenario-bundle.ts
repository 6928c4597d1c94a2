// A shipped scenario as k6 runs it: scenarios/<name>.ts and every module it imports from scenarios/ and core/, bundled
// by esbuild into one ES module under node_modules/.cache/wakestorm/, keyed by the hash of that source so an edit
// rebuilds it (~100 ms). Why: k6 compiles each TypeScript module it imports on its own (esbuild, a source map, a module
// record in every VU), and one module is lighter: k6 at 10,000 idle devices 67-68 → 59-60 MiB (BENCHMARKS.md).
// `k6 run scenarios/<name>.ts` by hand runs the same code from its sources.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import { cacheDir, pruneOld } from './cli-bundle.mjs';
import { treeFiles, treeHash } from './tree-hash.mjs';

const SOURCES = ['scenarios', 'core'];
const RESOLVE = '__wakestormResolve';

/**
 * import.meta.resolve(rel) in a module of the bundle means what it meant in that module's own file (the audio and the
 * shipped dialects are found from it): each call is given its file's URL, and this resolves `rel` against it.
 */
const RESOLVER = `const ${RESOLVE} = (base, rel) => {
  const parts = base.split('/');
  parts.pop();
  for (const seg of rel.split('/')) {
    if (seg === '..') parts.pop();
    else if (seg !== '.') parts.push(seg);
  }
  return parts.join('/');
};`;

const META_RESOLVE = ['import', 'meta', 'resolve('].join('.'); // spelled apart: the CLI's own bundle rewrites import.meta

/** The cache key: the scenarios' and core's source, and this builder. */
function sourceHash(root: string): string {
  const files = SOURCES.flatMap((d) => treeFiles(root, d, (n) => /\.(ts|json)$/.test(n)));
  return treeHash(root, [...files, 'scripts/scenario-bundle.ts']);
}

async function build(root: string, script: string, out: string): Promise<void> {
  const esbuild = await import('esbuild');
  try {
    const r = await esbuild.build({
      absWorkingDir: root,
      entryPoints: [script],
      bundle: true,
      format: 'esm',
      platform: 'neutral',
      external: ['k6', 'k6/*'],
      write: false,
      logLevel: 'silent',
      banner: { js: RESOLVER },
      plugins: [
        {
          name: 'own-import-meta-resolve',
          setup(b) {
            b.onLoad({ filter: /\.ts$/ }, (a) => ({
              loader: 'ts',
              contents: readFileSync(a.path, 'utf8').replaceAll(
                META_RESOLVE,
                `${RESOLVE}(${JSON.stringify(pathToFileURL(a.path).href)}, `,
              ),
            }));
          },
        },
      ],
    });
    writeFileSync(out, r.outputFiles[0]!.contents);
  } finally {
    // The build's service is a process of its own (~34 MiB): not kept beside the run that follows.
    await esbuild.stop();
  }
}

/**
 * The file k6 runs for `script`: the bundle when `script` is a scenario shipped under root/scenarios/, built first when
 * missing; `script` itself for any other file, or when no bundle can be had (a read-only install, no esbuild).
 */
export function k6ScriptFor(script: string, root: string): Promise<string> {
  // One build at a time in a process: runs started together (the test suites) share esbuild's service, which each
  // build stops when done.
  const next = builds.then(() => bundled(script, root));
  builds = next.catch(() => {});
  return next;
}
let builds: Promise<unknown> = Promise.resolve();

async function bundled(script: string, root: string): Promise<string> {
  const rel = relative(root, script);
  if (rel.startsWith('..') || dirname(rel) !== 'scenarios' || !rel.endsWith('.ts')) return script;
  try {
    const cache = cacheDir(root);
    const out = join(cache, `scenario-${basename(rel, '.ts')}-${sourceHash(root)}.js`);
    if (existsSync(out)) return out;
    mkdirSync(cache, { recursive: true });
    const tmp = `${out}.tmp-${process.pid}`;
    try {
      await build(root, rel.split(sep).join('/'), tmp);
      renameSync(tmp, out);
    } finally {
      rmSync(tmp, { force: true });
    }
    pruneOld(cache, 'scenario-', basename(out));
    return out;
  } catch {
    return script;
  }
}
