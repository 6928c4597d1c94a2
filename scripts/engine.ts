// The native device engine (engine/, Go): built from the repository's own source and its pinned modules (go.sum) into
// the cache, keyed by a hash of that source so an edit rebuilds it; started per run like Toxiproxy and the server.
import { execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, renameSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { WakestormError } from '../core/errors.ts';
import { guardedSpawn } from './guarded-spawn.ts';
import { treeFiles, treeHash } from './tree-hash.mjs';
import { cacheDir, goVersion, PINS, run, type Progress } from './tools.ts';

const SRC = join(dirname(fileURLToPath(import.meta.url)), '..', 'engine');

/** Where a run's devices live: the native engine (engine/, its own process) or k6's JS (k6/websockets). */
export type DeviceEngine = 'native' | 'k6';
/** The native engine: it holds every dialect, profile and fault the k6 device does, at a fraction of the cost. */
export const DEFAULT_ENGINE: DeviceEngine = 'native';

export class EngineError extends WakestormError {
  constructor(message: string, code: 1 | 2 = 2) {
    super(message, code);
  }

  override name = 'EngineError';
}

/** A hash of the engine's source, the build's cache key: every .go file, go.mod and go.sum under engine/, the
 * patched modules in third_party too. */
export function engineSourceHash(dir = SRC): string {
  return treeHash(
    dir,
    treeFiles(dir, '', (n) => n.endsWith('.go') || n === 'go.mod' || n === 'go.sum'),
  );
}

/** Where the engine built from this source lives. */
function enginePath(): string {
  return join(cacheDir(), `engine-${engineSourceHash()}`, 'wakestorm-engine');
}

/** The engine for this source, or null when it is not built yet. */
export function findEngine(): string | null {
  const p = enginePath();
  return existsSync(p) ? p : null;
}

/** Builds the engine from engine/ when this source has not been built yet. */
export async function ensureEngine(progress: Progress): Promise<string> {
  const have = findEngine();
  if (have) return have;
  if (!goVersion())
    throw new EngineError(
      `wakestorm: the device engine is built with Go >= ${PINS.minGo}: install Go and run 'npx wakestorm setup'`,
      1,
    );
  const out = enginePath();
  mkdirSync(dirname(out), { recursive: true });
  const tmp = `${out}.tmp-${process.pid}`;
  const env = { ...process.env, CGO_ENABLED: '0', GOTOOLCHAIN: 'local', GOFLAGS: '-mod=readonly' };
  progress(0, 1, 'building the device engine (engine/)');
  await run('go', ['build', '-trimpath', '-ldflags', '-s -w', '-o', tmp, '.'], SRC, env);
  renameSync(tmp, out);
  progress(1, 1, 'built the device engine');
  return out;
}

/** The engine, or an EngineError with the one line that says how to get it. */
export function requireEngine(): string {
  const p = findEngine();
  if (!p)
    throw new EngineError(
      `wakestorm: the device engine is not built for this source: run 'npx wakestorm setup' (needs Go >= ${PINS.minGo})`,
      1,
    );
  return p;
}

/** What the engine can run (`wakestorm-engine --capabilities`). */
export interface EngineCapabilities {
  version: string;
  wake: string[];
  lifecycle: string[];
  /** codec/framing pairs it streams, up and down. */
  audio: string[];
}

export function engineCapabilities(bin = requireEngine()): EngineCapabilities {
  return JSON.parse(execFileSync(bin, ['--capabilities'], { encoding: 'utf8', timeout: 10_000 })) as EngineCapabilities;
}

/** The one line that refuses a run the engine cannot honour, or null. */
export function engineRefusal(
  caps: EngineCapabilities,
  run: { wake: string; lifecycles: string[]; audio: string[] },
): string | null {
  if (!caps.wake.includes(run.wake)) {
    return `wakestorm: the native engine (${caps.version}) runs wake schedules ${caps.wake.join(', ')} only, not '${run.wake}': add --wake off, or --engine k6`;
  }
  const bad = run.lifecycles.find((l) => !caps.lifecycle.includes(l));
  if (bad)
    return `wakestorm: the native engine (${caps.version}) runs ${caps.lifecycle.join(', ')} links only, not a '${bad}' dialect: use --engine k6`;
  // Audio matters only when the devices talk.
  const codec = run.wake === 'off' ? undefined : run.audio.find((a) => !caps.audio.includes(a));
  if (codec)
    return `wakestorm: the native engine (${caps.version}) streams ${caps.audio.join(', ')} audio only, not ${codec}: use --engine k6`;
  return null;
}

export interface RunningEngine {
  /** ws://127.0.0.1:PORT/control */
  url: string;
  pid: number;
  child: ChildProcess;
  /** Calls fn when the engine exits on its own (not by stop()). */
  onExit(fn: (message: string) => void): void;
  stop(): Promise<void>;
}

/** Engines started by this process: with --instances N each writes its own profile (the file, then file.1, …). */
let enginesStarted = 0;

/**
 * Profiling a run's engine (docs/engine.md): WAKESTORM_ENGINE_CPU_PROFILE=<file> writes a CPU profile of its whole
 * life; WAKESTORM_ENGINE_PPROF=1 serves /debug/pprof/ on its control address (printed in engine.log) for a window.
 */
function profilingArgs(): string[] {
  const n = enginesStarted++;
  const file = process.env.WAKESTORM_ENGINE_CPU_PROFILE;
  const own = file && n > 0 ? `${file}.${n}` : file;
  return [...(own ? ['--cpu-profile', own] : []), ...(process.env.WAKESTORM_ENGINE_PPROF === '1' ? ['--pprof'] : [])];
}

/** Starts the engine on a loopback port of its choosing; it dies with the CLI (guardedSpawn). */
export async function startEngine(fdLimit?: number, env: Record<string, string> = {}): Promise<RunningEngine> {
  const bin = requireEngine();
  const child = guardedSpawn(
    bin,
    ['--listen', '127.0.0.1:0', ...profilingArgs()],
    { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: { ...process.env, ...env } },
    fdLimit,
  );
  let stopping = false;
  let exitFn: ((m: string) => void) | null = null;
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  child.once('exit', (code, sig) => {
    if (!stopping)
      exitFn?.(
        `the device engine exited during the run (${sig ? `signal ${sig}` : `code ${code}`})${stderr ? `: ${stderr.trim().split('\n').pop()}` : ''}`,
      );
  });
  const url = await new Promise<string>((res, rej) => {
    const lines = createInterface({ input: child.stdout! });
    const timer = setTimeout(
      () => rej(new EngineError('wakestorm: the device engine did not start in 10 s', 1)),
      10_000,
    );
    lines.on('line', (l) => {
      const m = /listening (ws:\/\/\S+)/.exec(l);
      if (m) {
        clearTimeout(timer);
        res(m[1]!);
      }
    });
    child.once('exit', () => {
      clearTimeout(timer);
      rej(new EngineError(`wakestorm: the device engine could not start: ${stderr.trim() || 'it exited'}`, 1));
    });
  });
  return {
    url,
    pid: child.pid!,
    child,
    onExit: (fn) => (exitFn = fn),
    stop: async () => {
      stopping = true;
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}
