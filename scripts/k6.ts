// The one k6 launcher: k6 run or inspect as a child process with the project's environment, the run contract's -e
// variables (core/run-contract.ts), k6's output as lines, and k6's own words for how it ended.
import { UNMATCHED_NOTE, VIOLATION_NOTE } from '../core/dialect.ts';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { k6LogMessage } from '../core/chaos-events.ts';
import { WakestormError } from '../core/errors.ts';
import { k6VarArgs, type K6Vars, type SummaryData } from '../core/run-contract.ts';
import type { DeviceEngine } from './engine.ts';
import { guardedSpawn } from './guarded-spawn.ts';
import { k6Env, requireTools } from './tools.ts';
import { httpJson } from './local-http.ts';

export interface SpawnK6Options {
  script: string;
  vars: K6Vars;
  /** k6 run flags (--out, --address, -q …), placed before the script. */
  args?: string[];
  /** More environment for k6 (dashboard settings); `unset` names are removed from the inherited environment. */
  env?: Record<string, string>;
  unset?: string[];
  cwd?: string;
  /** Its own process group: a terminal's Ctrl-C reaches only the CLI, which forwards exactly one SIGINT. */
  detached?: boolean;
  /** Raise k6's open-file limit (large fleets). */
  fdLimit?: number;
  /** k6's stdout straight to the terminal (its own progress bars) instead of as lines. */
  inheritStdout?: boolean;
  /** Each line k6 prints, in order per stream. */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
}

export interface K6Process {
  child: ChildProcess;
  /** Resolves once k6 has exited and its output is read to the end. */
  closed: Promise<{ code: number; signal: NodeJS.Signals | null }>;
}

/**
 * k6's garbage collector when the device engine runs the fleet: k6's VUs only turn the engine's records into samples,
 * a live heap of ~24 MB at 10,000 idle devices that Go's default (GOGC=100) lets grow to twice that. At 50 k6 was
 * 75 -> 67 MiB of RSS at +0.1% of a core, at 25 63 MiB at +1.1 (npm run bench:peers, one row each, 2026-12-07). Not
 * with `--engine k6`, where the heap is the devices and the collector's CPU is the VUs' lag. GOGC given wins.
 */
export function k6GcEnv(engine: DeviceEngine): Record<string, string> {
  return engine === 'native' && !process.env.GOGC ? { GOGC: '50' } : {};
}

/** Starts `k6 run`. */
export function spawnK6(o: SpawnK6Options): K6Process {
  const tools = requireTools();
  const env = k6Env(o.env);
  for (const k of o.unset ?? []) delete env[k];
  const args = ['run', ...k6VarArgs(o.vars), ...(o.args ?? []), o.script];
  const child = guardedSpawn(
    tools.k6,
    args,
    { env, cwd: o.cwd, stdio: ['ignore', o.inheritStdout ? 'inherit' : 'pipe', 'pipe'], detached: o.detached },
    o.fdLimit,
  );
  const ends: Promise<void>[] = [];
  const lines = (src: NodeJS.ReadableStream | null, stream: 'stdout' | 'stderr') => {
    if (!src) return;
    let buf = '';
    src.on('data', (d: Buffer) => {
      buf += d.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      for (const l of parts) o.onLine?.(l, stream);
    });
    ends.push(
      new Promise((res) =>
        src.on('end', () => {
          if (buf) o.onLine?.(buf, stream);
          res();
        }),
      ),
    );
  };
  lines(child.stdout, 'stdout');
  lines(child.stderr, 'stderr');
  const closed = new Promise<{ code: number; signal: NodeJS.Signals | null }>((res) =>
    child.on(
      'close',
      (c, sig) => void Promise.all(ends).then(() => res({ code: c ?? (sig ? 128 + 9 : 1), signal: sig })),
    ),
  );
  return { child, closed };
}

class ScenarioError extends WakestormError {
  constructor(message: string) {
    super(message, 2);
  }

  override name = 'ScenarioError';
}

/**
 * Evaluates the scenario's init context with the run's variables (`k6 inspect`), before anything starts: whatever the
 * scenario itself validates (its default timeline against --duration, profiles, SLOs, bounds) fails here as one line.
 */
/** What the CLI learns of a scenario before running it (makeScenario's options.ext.wakestorm, as k6 resolved it). */
export interface Inspected {
  durationMs: number | null;
  /** The fleet as the scenario resolved it: devices and the VUs that run them (null if k6 did not say). */
  devices: number | null;
  vus: number | null;
  /** The wake schedule's mode and the lifecycles of the fleet's dialects (what the device engine must honour). */
  wakeMode: string | null;
  lifecycles: string[];
  /** The codec/framing pairs of the fleet's audio, both ways. */
  audio: string[];
  /** The faults of the run's timeline (its own or --timeline) that act through Toxiproxy. */
  networkFaults: string[];
}

export function inspectScenario(script: string, vars: K6Vars, cwd?: string): Inspected {
  const tools = requireTools();
  try {
    const out = execFileSync(tools.k6, ['inspect', ...k6VarArgs(vars), script], {
      cwd,
      env: k6Env({}),
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 60_000,
    });
    // The scenario's own duration, as it resolved it (makeScenario puts it in options.ext.wakestorm).
    try {
      type Ext = {
        duration_ms?: unknown;
        devices?: unknown;
        vus?: unknown;
        wake_mode?: unknown;
        lifecycles?: unknown;
        audio?: unknown;
        network_faults?: unknown;
      };
      const x = (JSON.parse(out.toString()) as { ext?: { wakestorm?: Ext } }).ext?.wakestorm;
      return {
        durationMs: typeof x?.duration_ms === 'number' ? x.duration_ms : null,
        devices: typeof x?.devices === 'number' ? x.devices : null,
        vus: typeof x?.vus === 'number' ? x.vus : null,
        wakeMode: typeof x?.wake_mode === 'string' ? x.wake_mode : null,
        lifecycles: Array.isArray(x?.lifecycles) ? x.lifecycles.map(String) : [],
        audio: Array.isArray(x?.audio) ? x.audio.map(String) : [],
        networkFaults: Array.isArray(x?.network_faults) ? x.network_faults.map(String) : [],
      };
    } catch {
      return {
        durationMs: null,
        devices: null,
        vus: null,
        wakeMode: null,
        lifecycles: [],
        audio: [],
        networkFaults: [],
      };
    }
  } catch (e) {
    const err = e as { stderr?: Buffer; stdout?: Buffer; status?: number };
    const text = `${err.stderr?.toString() ?? ''}${err.stdout?.toString() ?? ''}`;
    const line = text.split('\n').find((l) => /level=error/.test(l)) ?? text.trim().split('\n')[0] ?? '';
    const first = (k6LogMessage(line) ?? line).split('\n')[0]!.replace(/^(GoError|[A-Za-z]*Error): /, '');
    throw new ScenarioError(`${basename(script)}: ${first || `k6 inspect exited ${err.status}`}`);
  }
}

/** k6's exit codes that are not a verdict, in words (k6 errext/exitcodes). */
export const K6_EXIT: Record<number, string> = {
  97: 'cloud test failed',
  100: 'setup timed out',
  101: 'teardown timed out',
  102: 'timed out',
  103: 'engine error',
  104: 'invalid configuration',
  105: 'aborted from outside',
  106: 'cannot start its REST API',
  107: 'script exception',
  108: 'script aborted the test',
  109: 'Go panic',
  110: 'marked as failed',
};

/** The last error k6 logged (its msg), for an INVALID reason. */
export function lastK6Error(logPath: string): string {
  let text = '';
  try {
    text = readFileSync(logPath, 'utf8');
  } catch {
    return '';
  }
  const last = text
    .split('\n')
    .filter((l) => /level=error/.test(l))
    .at(-1);
  if (!last) return '';
  return (k6LogMessage(last) ?? last).split('\n')[0]!.slice(0, 300);
}

/** The server message types the devices' dialect did not match, as the devices printed them (once per VU and type). */
export function unmatchedTypesIn(logPath: string): string[] {
  return labelsIn(logPath, UNMATCHED_NOTE);
}

/** The kinds of protocol violation the devices logged (k6.log): seen even when k6 was stopping and kept no metric. */
export function violationKindsIn(logPath: string): string[] {
  return labelsIn(logPath, VIOLATION_NOTE, '[a-z_]+');
}

/** The distinct labels (at most 16, each of `chars`) after `note` in a k6.log. */
function labelsIn(logPath: string, note: string, chars = '[A-Za-z0-9_.:()-]+'): string[] {
  let text = '';
  try {
    text = readFileSync(logPath, 'utf8');
  } catch {
    return [];
  }
  const labels = new Set<string>();
  const re = new RegExp(`${note}(${chars})`, 'g');
  for (const m of text.matchAll(re)) if (labels.size < 16) labels.add(m[1]!);
  return [...labels];
}

/**
 * Polls k6's REST API for the fleet's counters and shows how many devices are connected (links_up - links_down) and
 * what they did so far. Returns the function that stops it.
 */
export function k6Progress(
  apis: string[],
  durationMs: number,
  mode: 'tty' | 'lines' | 'off',
  note: () => string = () => '',
): () => void {
  if (mode === 'off') return () => {};
  const t0 = Date.now();
  // The fleet's counters summed over every k6 instance of the run.
  const counter = async (id: string) =>
    (await Promise.all(apis.map((api) => counterOf(api, id)))).reduce((a, b) => a + b, 0);
  const counterOf = async (api: string, id: string) => {
    try {
      const r = await httpJson<{ data: { attributes: { sample: { count?: number } } } }>(`${api}/v1/metrics/${id}`, {
        signal: AbortSignal.timeout(900),
      });
      return r.ok ? (r.json.data.attributes.sample.count ?? 0) : 0;
    } catch {
      return 0;
    }
  };
  let last = 0;
  let drawn = false;
  const draw = async () => {
    const [started = 0, up = 0, down = 0, wakes = 0, drops = 0] = await Promise.all(
      ['devices_started', 'links_up', 'links_down', 'wakes', 'connection_drops'].map(counter),
    );
    const s = Math.round((Date.now() - t0) / 1000);
    const said = note();
    const line = `  ${s}s/${Math.round(durationMs / 1000)}s  devices connected ${up - down}/${started}  wakes ${wakes}  links lost ${drops}${said ? `  ${said}` : ''}`;
    if (mode === 'tty') {
      process.stdout.write(`\r${line}\x1b[K`);
      drawn = true;
    } else if (Date.now() - last >= 10_000) {
      last = Date.now();
      process.stdout.write(`${line}\n`);
    }
  };
  // A missed tick (k6's API busy or gone) draws nothing: the next one will.
  const timer = setInterval(() => void draw().catch(() => {}), 2000);
  return () => {
    clearInterval(timer);
    if (drawn) process.stdout.write('\n');
  };
}

export interface K6Result {
  code: number | null;
  stdout: string;
  stderr: string;
  /** k6's handleSummary data (metrics with values and thresholds), or null if k6 wrote none. */
  summary: SummaryData | null;
}

export interface K6RunOptions {
  script: string;
  /** The run contract's variables; numbers are written as text. */
  vars?: { [K in keyof K6Vars]?: K6Vars[K] | number };
  env?: Record<string, string>;
  args?: string[];
  /** Called with each output line (progress). */
  onOutput?: (line: string) => void;
  timeoutMs?: number;
  /** Where the summary goes; a temp file when absent. */
  summaryPath?: string;
  signal?: AbortSignal;
}

/** A bounded `k6 run` whose output and summary come back whole (tests, benches). */
export async function runK6(opts: K6RunOptions): Promise<K6Result> {
  const tmp = opts.summaryPath ? null : mkdtempSync(join(tmpdir(), 'wakestorm-k6-'));
  const summaryPath = opts.summaryPath ?? join(tmp!, 'summary.json');
  const vars: K6Vars = Object.fromEntries(
    Object.entries({ ...opts.vars, SUMMARY_JSON: summaryPath }).map(([k, v]) => [k, v === undefined ? v : String(v)]),
  );
  let stdout = '';
  let stderr = '';
  const k6 = spawnK6({
    script: opts.script,
    vars,
    args: ['--quiet', ...(opts.args ?? [])],
    env: opts.env,
    onLine: (line, stream) => {
      if (stream === 'stdout') stdout += `${line}\n`;
      else stderr += `${line}\n`;
      opts.onOutput?.(line);
    },
  });
  const kill = () => k6.child.kill('SIGINT');
  opts.signal?.addEventListener('abort', kill);
  const t = opts.timeoutMs ? setTimeout(() => k6.child.kill('SIGKILL'), opts.timeoutMs) : null;
  const { code } = await k6.closed;
  if (t) clearTimeout(t);
  opts.signal?.removeEventListener('abort', kill);
  let summary: SummaryData | null = null;
  try {
    summary = JSON.parse(readFileSync(summaryPath, 'utf8'));
  } catch {
    /* k6 failed before the summary */
  }
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  return { code, stdout, stderr, summary };
}
