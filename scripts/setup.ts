// `wakestorm setup`: makes sure the pinned k6 and Toxiproxy exist (building them with Go if needed); also npm's postinstall.
import { SingleBar } from 'cli-progress';
import { WakestormError } from '../core/errors.ts';
import { engineSourceHash, ensureEngine, findEngine } from './engine.ts';
import { cliBundle } from './cli-bundle.mjs';
import {
  PINS,
  ToolError,
  cacheDir,
  ensureTools,
  findTools,
  missingToolsLine,
  requireTools,
  type Progress,
} from './tools.ts';

/** `--check`: print each tool's path and version; exit code 1 if one is missing. */
export function checkTools(): number {
  const { k6, toxiproxy } = findTools();
  console.log(`k6          ${k6 ? `${k6.version}  ${k6.path}` : 'MISSING'}`);
  console.log(`toxiproxy   ${toxiproxy ? `${PINS.toxiproxy.version}  ${toxiproxy.server}` : 'MISSING'}`);
  const engine = findEngine();
  console.log(`engine      ${engine ? `${engineSourceHash()}  ${engine}` : `MISSING (source ${engineSourceHash()})`}`);
  console.log(`cache       ${cacheDir()}`);
  if (!k6 || !toxiproxy) {
    console.error(missingToolsLine());
    return 1;
  }
  if (!engine) {
    console.error(
      `wakestorm: the device engine is not built for this source: run 'npx wakestorm setup' (needs Go >= ${PINS.minGo})`,
    );
    return 1;
  }
  return 0;
}

/** Builds what is missing, with a progress bar on a terminal and a line per stage elsewhere. */
export async function setup(opts: { postinstall?: boolean } = {}): Promise<number> {
  const before = findTools();
  const t0 = Date.now();
  if (!before.k6 || !before.toxiproxy) {
    console.log(
      'wakestorm: building the pinned k6 and Toxiproxy from their Go modules; this takes a few minutes the first time',
    );
    try {
      await ensureTools(reporter(t0));
    } catch (e) {
      const line = e instanceof ToolError ? e.message : `wakestorm: setup failed: ${(e as Error).message}`;
      console.error(line);
      // npm install must still succeed without Go; every command that needs the tools repeats the line.
      return opts.postinstall ? 0 : 1;
    }
  }
  // The CLI's bundle too, so the first command starts at once (it would build on first use anyway, or run from tsx).
  if (!(await cliBundle())) console.error('wakestorm: the CLI bundle could not be built; the CLI runs through tsx');
  const t = requireTools();
  try {
    await ensureEngine(reporter(t0));
  } catch (e) {
    console.error(
      e instanceof WakestormError ? e.message : `wakestorm: could not build the device engine: ${(e as Error).message}`,
    );
    return opts.postinstall ? 0 : 1;
  }
  console.log(
    `wakestorm: k6 ${t.k6Version}, Toxiproxy ${t.toxiproxyVersion} and the device engine ready in ${Math.round((Date.now() - t0) / 1000)} s`,
  );
  return 0;
}

/** Progress of a build: a bar on a terminal, a line per stage elsewhere. */
function reporter(t0: number): Progress {
  const tty = process.stderr.isTTY;
  const bar = tty
    ? new SingleBar({ format: '{label} [{bar}] {value}/{total} packages | {duration_formatted}', hideCursor: true })
    : null;
  let lastLabel = '';
  let started = false;
  return (done, total, label) => {
    if (bar) {
      if (!started) bar.start(total, done, { label });
      started = true;
      bar.setTotal(total);
      bar.update(done, { label });
      if (done === total) bar.stop();
    } else if (label !== lastLabel) {
      console.log(`wakestorm: ${label} (${Math.round((Date.now() - t0) / 1000)} s)`);
      lastLabel = label;
    }
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const postinstall = process.argv.includes('--postinstall');
  if (postinstall && process.env.WAKESTORM_SKIP_SETUP) process.exit(0);
  void setup({ postinstall }).then((code) => process.exit(code));
}
