// The CLI as JavaScript: scripts/wakestorm.ts and every module it imports from scripts/, core/ and server/, bundled by
// esbuild (one chunk per lazily imported command, the npm packages left to node_modules) into
// node_modules/.cache/wakestorm/cli-<hash>/, keyed by the hash of that source so an edit rebuilds it (~70 ms).
// Why: run through tsx, the CLI keeps a TypeScript loader in a thread of its own for the whole run, about 35 MiB of
// RSS beside k6 (measured: CLI 115 -> 75 MiB at 10,000 idle devices). The bundle lives under node_modules so its imports of
// packages resolve as the sources' do.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { treeFiles, treeHash } from './tree-hash.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const SOURCES = ['scripts', 'core', 'server'];
const ENTRY = 'wakestorm.mjs';
const STALE_MS = 24 * 3600_000;

/** The cache key: the bundled source (this file, the build's options, among it) and package.json. */
export function cliSourceHash(root = ROOT) {
  const files = SOURCES.flatMap((d) => treeFiles(root, d, (n) => /\.(ts|mts|mjs|json)$/.test(n)));
  return treeHash(root, [...files, 'package.json']);
}

/**
 * Each module sees its own source file as import.meta (ROOT and the audio are found from it), not the bundle's
 * chunk: the bundle then runs from any folder exactly as the sources do.
 */
const META = ['import', 'meta'].join('.'); // spelled apart: this file is bundled too, and must not rewrite itself
const ownImportMeta = {
  name: 'own-import-meta',
  setup(build) {
    build.onLoad({ filter: /\.(m?ts|mjs)$/ }, (a) => ({
      loader: a.path.endsWith('.mjs') ? 'js' : 'ts',
      contents: readFileSync(a.path, 'utf8')
        .replaceAll(`${META}.url`, JSON.stringify(pathToFileURL(a.path).href))
        .replaceAll(`${META}.dirname`, JSON.stringify(dirname(a.path)))
        .replaceAll(`${META}.filename`, JSON.stringify(a.path)),
    }));
  },
};

/** Builds the bundle of this source into outdir (a temporary folder; the caller renames it into place). */
export async function buildCliBundle(outdir, root = ROOT) {
  const esbuild = await import('esbuild');
  try {
    await esbuild.build({
      absWorkingDir: root,
      entryPoints: ['scripts/wakestorm.ts'],
      bundle: true,
      splitting: true,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      packages: 'external',
      keepNames: true,
      outdir,
      outExtension: { '.js': '.mjs' },
      logLevel: 'silent',
      // Not the environment's: the build's word that this code runs from the bundle (scripts/run.ts reads it).
      define: { 'process.env.WAKESTORM_BUNDLED': '"1"' },
      plugins: [ownImportMeta],
    });
  } finally {
    // The build's service is a process of its own (~34 MiB): not kept beside the run that follows.
    await esbuild.stop();
  }
}

/** The folder of wakestorm's builds (the CLI's, the scenarios'): under node_modules, so their package imports resolve. */
export function cacheDir(root = ROOT) {
  return join(root, 'node_modules', '.cache', 'wakestorm');
}

/**
 * Builds in `cache` named `prefix`… older than a day, other than `keep` (this source's): nothing still running reads
 * them (a CLI loads its chunks, k6 its scenario, within the day they were built).
 */
export function pruneOld(cache, prefix, keep) {
  for (const e of readdirSync(cache)) {
    if (!e.startsWith(prefix) || e === keep) continue;
    const p = join(cache, e);
    try {
      if (Date.now() - statSync(p).mtimeMs > STALE_MS) rmSync(p, { recursive: true, force: true });
    } catch {
      /* another CLI pruned it */
    }
  }
}

/**
 * The bundle's entry for this source, built first when missing; null when it cannot be had (no esbuild, a read-only
 * install, a source that does not bundle): the bin then runs the TypeScript through tsx.
 */
export async function cliBundle(root = ROOT) {
  try {
    const cache = cacheDir(root);
    const name = `cli-${cliSourceHash(root)}`;
    const entry = join(cache, name, ENTRY);
    if (existsSync(entry)) return entry;
    mkdirSync(cache, { recursive: true });
    const tmp = join(cache, `${name}.tmp-${process.pid}`);
    await buildCliBundle(tmp, root);
    try {
      renameSync(tmp, join(cache, name));
    } catch {
      rmSync(tmp, { recursive: true, force: true }); // another CLI built it first
    }
    pruneOld(cache, 'cli-', name);
    return existsSync(entry) ? entry : null;
  } catch {
    return null;
  }
}
