// `wakestorm run`: tools → stack → k6 (dashboard export, samples) → results/<run-id>/ → teardown → k6's exit code.
// Results are written into a hidden partial folder and renamed into place at the end, so no run folder is half-written.
import { preflightUpgrade } from './preflight.ts';
import { runTls, tlsServerName } from './tls-trust.ts';
import { WakestormError } from '../core/errors.ts';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { pathToFileURL } from 'node:url';
import { loadDialect, validateDialect } from '../core/dialect.ts';
import { connect } from 'node:net';
import { cpus, hostname, totalmem } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { parseProfileMix } from '../core/profiles.ts';
import {
  boundedInt,
  DEVICE_BOUNDS,
  INSTANCE_BOUNDS,
  isLoopbackUrl,
  overrideBackoff,
  parseDuration,
  parseWake,
  segmentDevicesPerVu,
} from '../core/run-config.ts';
import {
  verdictFields,
  type K6Vars,
  type ResolvedRun,
  type RunRecord,
  type RunVars,
  type SummaryData,
} from '../core/run-contract.ts';
import { resolveSlos, type Slo } from '../core/slo.ts';
import { judge, junitXml, verdictLines, type Judgement } from '../core/verdict.ts';
import { textSummary } from '../core/summary.ts';
import type { ServerConfig } from '../server/config.ts';
import { decodeChaosEvent, unappliedFaults, type ChaosEvent, type EventsFile } from '../core/chaos-events.ts';
import { loadTimeline } from '../core/timelines.ts';
import { Sampler, type ProcStats } from './proc-sampler.ts';
import { rssMiB } from './proc-stats.ts';
import { MAX_EXPOSITION_BYTES, watchServerMetrics, type ServerSample } from './server-watch.ts';
import { httpCall, httpJson, jsonOr } from './local-http.ts';
import { baselineLines, type LoadedRun } from './compare.ts';
import { writeDashboardConfig } from './dashboard.ts';
import {
  ABORT_GRACE_MS,
  K6_GUARD_MS,
  K6_KILL_FACTOR,
  k6DeviceRssBoundMiB,
  k6KillRule,
  watchTester,
} from './tester-watch.ts';
import {
  inspectScenario,
  type Inspected,
  K6_EXIT,
  k6GcEnv,
  k6Progress,
  lastK6Error,
  spawnK6,
  unmatchedTypesIn,
  violationKindsIn,
} from './k6.ts';
import { claimRunDir, fsProblem, gitCommit, publishRunDir, readJson, runIdFor, toCsv, writeResult } from './run-dir.ts';
import { redactArgv, writeSecretFile } from './secret.ts';
import { markStopping } from './wrapper-watch.ts';
import { k6ScriptFor } from './scenario-bundle.ts';
import {
  DEFAULT_ENGINE,
  EngineError,
  engineCapabilities,
  engineRefusal,
  startEngine,
  type DeviceEngine,
  type RunningEngine,
} from './engine.ts';
import {
  instancesFor,
  serverSizedFor,
  shardUrls,
  StackError,
  startStack,
  toxiproxyShardsFor,
  type Stack,
} from './stack.ts';
import { mergeInstanceDirs } from './merge-instances.ts';
import { pickFreePort } from './process-control.ts';
import { requireTools } from './tools.ts';

export const ROOT = new URL('../', import.meta.url).pathname;

/** The results root: the one given (--results, WAKESTORM_RESULTS), else results/ in the repository. */
/**
 * k6's remote-write output, aimed at `url`: trends as the percentiles the SLOs judge (the user's own
 * K6_PROMETHEUS_RW_* settings win), so docs/grafana/wakestorm.json's panels have series to draw.
 */
function prometheusEnv(url: string): Record<string, string> {
  return {
    K6_PROMETHEUS_RW_SERVER_URL: url,
    K6_PROMETHEUS_RW_TREND_STATS: process.env.K6_PROMETHEUS_RW_TREND_STATS ?? 'p(50),p(95),p(99),max',
    K6_PROMETHEUS_RW_PUSH_INTERVAL: process.env.K6_PROMETHEUS_RW_PUSH_INTERVAL ?? '5s',
  };
}

/** The engine a run's devices live in: the one asked for, else the default. */
const deviceEngine = (opts: RunOptions): DeviceEngine => opts.engine ?? DEFAULT_ENGINE;

export function resultsRoot(p?: string): string {
  return resolve(p ?? join(ROOT, 'results'));
}

export interface RunOptions {
  scenario: string;
  devices?: number;
  devicesPerVu?: number;
  /** How long the first connects spread over (k6's RAMP); must be shorter than the duration. */
  ramp?: string;
  duration?: string;
  profile?: string;
  timeline?: string;
  wake?: string;
  /** A dialect for every device: a shipped name, a .json file, or a .ts/.js module exporting one (default or `dialect`). */
  dialect?: string;
  seed?: string;
  /** BACKOFF: every profile's reconnect policy replaced, <policy>[:base_ms[:cap_ms]]. */
  backoff?: string;
  /** SLO overrides: name=value, name=off, or a .json SLO file. */
  slo?: string[];
  serverUrl?: string;
  server?: Partial<ServerConfig>;
  /** Where the devices run: in the native device engine (the default: engine/, started for the run) or in k6. */
  engine?: DeviceEngine;
  /** Aim the devices at the server directly, without Toxiproxy (capacity steps). */
  direct?: boolean;
  /** A wss:// server's private CA (PEM), trusted by every process of the run (scripts/tls-trust.ts). */
  ca?: string;
  /** Skip the wss:// server's certificate check (an explicit opt-in the report shows). */
  insecureTls?: boolean;
  /** Where a dialect's provision call goes (PROVISION_URL); none: the devices' target over http. */
  provisionUrl?: string;
  /** A user's server's Prometheus endpoint, read during the run (the reference server's /metrics is read always). */
  serverMetrics?: string;
  /** An earlier run this one's SLOs are compared with in its report (loaded by the caller before anything starts). */
  baseline?: LoadedRun;
  resultsRoot?: string;
  runId?: string;
  /** Extra k6 -e variables. */
  vars?: Record<string, string>;
  dashboard?: boolean;
  /** Write the per-sample JSON and the charts (default true). */
  charts?: boolean;
  /** Forward k6's output to the terminal (default true). */
  echo?: boolean;
  /**
   * Stop a run whose generator stays past the saturation bounds for ABORT_GRACE_MS (INVALID, what was measured kept).
   * Default: on when stdout is not a terminal (CI, scripts), off on a terminal.
   */
  abortOnInvalid?: boolean;
  /** The progress line: redrawn in place (tty), a line every 10 s (lines), or none. Default: from echo and the terminal. */
  progress?: 'tty' | 'lines' | 'off';
  /** k6 outputs passed through as --out (e.g. csv=…, experimental-prometheus-rw). */
  outputs?: string[];
  /** A Prometheus remote-write URL: the metrics stream there live (docs/live-metrics.md). */
  prometheus?: string;
  log?: (line: string) => void;
  /** Aborts the run (as Ctrl-C does). */
  signal?: AbortSignal;
  /** Called once k6 runs, with the processes of the run (benches sample them). */
  onStarted?: (p: {
    k6Pid: number;
    /** Every k6 instance's pid (k6Pid is the first). */
    k6Pids: number[];
    serverPid: number | null;
    /** null with no Toxiproxy (--direct). */
    toxiproxyPid: number | null;
    toxiproxyPids: number[];
    enginePid: number | null;
    enginePids: number[];
    serverHttpUrl: string;
    startedAt: number;
  }) => void;
  /**
   * k6 processes, each running its execution segment of the fleet with its own device engine and Toxiproxy shards,
   * merged into one result; default: as many as the fleet needs under the open-file limit (instancesFor).
   */
  instances?: number;
  /** Toxiproxy processes; default: as many as the fleet needs under the open-file limit (toxiproxyShardsFor). */
  toxiproxyShards?: number;
  /** Raise the k6 child's open-file limit (large fleets). */
  fdLimit?: number;
  /** Bearer token for the devices (and the reference server); never written to a command line or a result file. */
  token?: string;
  /** A file whose first line is the token. */
  tokenFile?: string;
}

export interface RunResult {
  code: number;
  /** Stopped by Ctrl-C or a signal. */
  interrupted: boolean;
  /** k6 did not end by itself and the watchdog stopped it. */
  stuck: boolean;
  dir: string;
  runId: string;
  incomplete: boolean;
  summary: {
    metrics: Record<
      string,
      { type: string; values: Record<string, number>; thresholds?: Record<string, { ok: boolean }> }
    >;
  } | null;
  slos: Slo[];
  /** PASS, FAIL or INVALID with the reasons; `code` is its exit code. */
  judgement: Judgement;
}

export class RunError extends WakestormError {
  constructor(message: string) {
    super(message, 2);
  }

  override name = 'RunError';
}

/**
 * The scenario as k6 inspects it, laid out so that each of `segments` k6 processes gets VUs of its own (k6 splits a
 * scenario between execution segments by whole VUs; a segment without one runs no device, and the k6-operator
 * refuses a TestRun with fewer VUs than runners). Unless the user chose `--devices-per-vu`, the fleet (`--devices`, or
 * the scenario's own) is laid out by `segmentDevicesPerVu` (set in `vars`); a fleet or a layout that leaves a segment
 * empty is refused in one line naming `what` (the flag that asked for the segments).
 */
export function inspectForSegments(
  script: string,
  vars: K6Vars,
  segments: number,
  native: boolean,
  what: string,
): Inspected {
  let inspected = inspectScenario(script, vars, ROOT);
  const fleet = inspected.devices;
  if (segments <= 1 || fleet === null) return inspected;
  if (fleet < segments)
    throw new RunError(
      `${what} needs a device in each of its ${segments} k6 processes, and the fleet has ${fleet}: give --devices ${segments} or more`,
    );
  if (vars.DEVICES_PER_VU === undefined) {
    vars.DEVICES_PER_VU = String(segmentDevicesPerVu(fleet, segments, native));
    inspected = inspectScenario(script, vars, ROOT);
  }
  if (inspected.vus !== null && inspected.vus < segments)
    throw new RunError(
      `--devices-per-vu ${vars.DEVICES_PER_VU} makes ${inspected.vus} VUs, and ${what} needs one in each: give at most ${Math.floor(fleet / segments)}`,
    );
  return inspected;
}

/** Resolves `smoke`, `smoke.ts` or a path to a scenario file. */
function resolveScenario(s: string): string {
  const candidates = [s, join(ROOT, 'scenarios', s), join(ROOT, 'scenarios', `${s}.ts`)];
  for (const c of candidates) if (existsSync(c) && c.endsWith('.ts')) return resolve(c);
  throw new RunError(
    `no scenario '${s}': give a file like scenarios/smoke.ts or a name (smoke, wake-latency, reconnect-storm, flaky-network, soak, capacity)`,
  );
}

/** SLO flags → k6 -e variables (SLO_<name>=v, SLO_FILE=path). */
function sloVars(slo: string[] | undefined): RunVars {
  const out: RunVars = {};
  for (const s of slo ?? []) {
    if (s.endsWith('.json')) {
      if (!existsSync(s)) throw new RunError(`--slo ${s}: no such file`);
      if (resolve(s).includes(','))
        throw new RunError(`--slo ${s}: a path with a comma cannot be passed on (SLO_FILE is a comma-separated list)`);
      // Several files merge in order (a later one replaces an SLO of the same name).
      out.SLO_FILE = out.SLO_FILE ? `${out.SLO_FILE},${resolve(s)}` : resolve(s);
      continue;
    }
    const m = /^([a-z][a-z0-9_]*(?:@(?:during|recovery))?)=(off|-?\d+(?:\.\d+)?)$/.exec(s);
    if (!m)
      throw new RunError(
        `--slo '${s}' must be name=number, name@during=number, name@recovery=number, name=off, or a .json file (e.g. --slo response_p95=1500)`,
      );
    out[`SLO_${m[1]!.replace('@', '__')}`] = m[2]!;
  }
  return out;
}

/** Validates every flag before anything starts; returns the k6 variables. */
/**
 * Everything a run will pass k6, checked before anything starts. `controlFault`: a fault of --timeline that only the
 * reference server wakestorm starts can suffer (server-restart), else null.
 */
export function planRun(opts: RunOptions): { script: string; vars: K6Vars; slos: Slo[]; controlFault: string | null } {
  const script = resolveScenario(opts.scenario);
  const vars: K6Vars = {};
  // The bounds k6 itself applies (DEVICE_BOUNDS): a fleet k6 would refuse never starts the stack.
  if (opts.devices !== undefined)
    vars.DEVICES = String(boundedInt(opts.devices, '--devices', DEVICE_BOUNDS.devices, RunError));
  if (opts.instances !== undefined) boundedInt(opts.instances, '--instances', INSTANCE_BOUNDS, RunError);
  if (opts.devicesPerVu !== undefined)
    vars.DEVICES_PER_VU = String(boundedInt(opts.devicesPerVu, '--devices-per-vu', DEVICE_BOUNDS.perVu, RunError));
  let durationMs: number | undefined;
  if (opts.duration !== undefined) {
    durationMs = parseDuration(opts.duration, '--duration');
    vars.DURATION = opts.duration;
  }
  if (opts.ramp !== undefined) {
    const rampMs = parseDuration(opts.ramp, '--ramp');
    if (durationMs !== undefined && rampMs >= durationMs)
      throw new RunError(`--ramp (${opts.ramp}) must be shorter than --duration (${opts.duration})`);
    vars.RAMP = opts.ramp;
  }
  if (opts.profile !== undefined) {
    parseProfileMix(opts.profile, (p) => readFileSync(p, 'utf8'));
    vars.PROFILE = opts.profile
      .split(',')
      .map((p) => (p.split(':')[0]!.endsWith('.json') ? resolve(p) : p))
      .join(',');
  }
  let controlFault: string | null = null;
  if (opts.timeline !== undefined) {
    const { steps } = loadTimeline(opts.timeline, (p) => readFileSync(p, 'utf8'), durationMs);
    controlFault = steps.find((s) => s.needsControl)?.fault ?? null;
    vars.TIMELINE = opts.timeline.endsWith('.json') ? resolve(opts.timeline) : opts.timeline;
  }
  if (opts.wake !== undefined) {
    parseWake(opts.wake, { mode: 'off', interval_ms: 0, first_min_ms: 0, first_max_ms: 0 });
    vars.WAKE = opts.wake;
  }
  if (opts.dialect !== undefined) {
    // A malformed dialect is one line before anything starts; k6 inspect then checks it against the scenario's profiles.
    const spec = opts.dialect.endsWith('.json') ? resolve(opts.dialect) : opts.dialect;
    loadDialect(
      spec,
      (p) => readFileSync(p, 'utf8'),
      (p) => readFileSync(join(ROOT, p), 'utf8'),
    );
    vars.DIALECT = spec;
  }
  if (opts.seed !== undefined) vars.SEED = opts.seed;
  if (opts.backoff !== undefined) {
    overrideBackoff([], opts.backoff, '--backoff');
    vars.BACKOFF = opts.backoff;
  }
  Object.assign(vars, sloVars(opts.slo), opts.vars ?? {});
  const slos = resolveSlos(vars, (p) => readFileSync(p, 'utf8'));
  return { script, vars, slos, controlFault };
}

/** The bearer token from --token or --token-file, checked like the server checks its own. */
function resolveToken(opts: RunOptions): string | null {
  return resolveTokenFlags(opts.token, opts.tokenFile);
}

/** The token of --token or --token-file (one of them), checked; null when neither is given. */
/**
 * The devices' credential: whatever the user's server takes, 1-4096 printable characters without spaces (a 6-character
 * key too). The reference server, when wakestorm starts it, holds its own tokens to its own rule (8-256).
 */
function deviceToken(t: string): string {
  if (!/^[\x21-\x7e]{1,4096}$/.test(t))
    throw new RunError('--token must be 1-4096 printable characters without spaces');
  return t;
}

export function resolveTokenFlags(tokenFlag: string | undefined, tokenFileFlag: string | undefined): string | null {
  // An empty value (a CI secret that is not set) is no token.
  const token = tokenFlag || undefined;
  const tokenFile = tokenFileFlag || undefined;
  if (token !== undefined && tokenFile !== undefined) throw new RunError('give --token or --token-file, not both');
  try {
    if (token !== undefined) return deviceToken(token);
    if (tokenFile !== undefined) {
      let text: string;
      try {
        text = readFileSync(tokenFile, 'utf8');
      } catch (e) {
        throw new RunError(
          `--token-file ${tokenFile}: cannot read it (${(e as NodeJS.ErrnoException).code ?? 'error'})`,
        );
      }
      const line = text
        .split(/\r?\n/)
        .map((l) => l.trim())
        .find((l) => l && !l.startsWith('#'));
      if (!line) throw new RunError(`--token-file ${tokenFile}: holds no token`);
      return deviceToken(line.split(/\s+/)[0]!);
    }
  } catch (e) {
    throw new RunError((e as Error).message.replace('--tokens-file', '--token-file'));
  }
  return null;
}

/**
 * A user's module. A .ts one needs a TypeScript loader: run from the sources the CLI has tsx's already; the bundled CLI
 * (scripts/cli-bundle.mjs, which defines WAKESTORM_BUNDLED) registers it now, for the file that needs it.
 */
async function importUserModule(file: string): Promise<unknown> {
  if (process.env.WAKESTORM_BUNDLED === '1' && /\.[cm]?ts$/.test(file)) (await import('tsx/esm/api')).register();
  return await import(pathToFileURL(file).href);
}

/**
 * A dialect written as a TypeScript or JavaScript module (its default export, or `dialect`) becomes the JSON k6 reads:
 * validated here, written to a private temporary file that the run removes. Names and .json files pass as they are.
 */
async function dialectModuleToJson(spec: string | undefined): Promise<{ path: string; remove(): void } | null> {
  if (!spec || !/\.(ts|mts|js|mjs)$/.test(spec)) return null;
  const file = resolve(spec);
  if (!existsSync(file)) throw new RunError(`--dialect ${spec}: no such file`);
  let mod: { default?: unknown; dialect?: unknown };
  try {
    mod = (await importUserModule(file)) as typeof mod;
  } catch (e) {
    throw new RunError(`--dialect ${spec}: cannot load the module (${String((e as Error).message).split('\n')[0]})`);
  }
  const d = validateDialect(mod.default ?? mod.dialect, spec);
  const dir = mkdtempSync(join(tmpdir(), 'wakestorm-dialect-'));
  const path = join(dir, `${d.name}.json`);
  writeFileSync(path, JSON.stringify(d));
  return { path, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** --server-metrics: an http(s) URL on loopback (or ALLOW_REMOTE=1) that answers with a Prometheus exposition. */
async function serverMetricsReachable(url: string): Promise<void> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new RunError(`--server-metrics ${url} is not a URL (http://host:port/metrics)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw new RunError(`--server-metrics ${url} must be http:// or https://`);
  if (!isLoopbackUrl(url) && process.env.ALLOW_REMOTE !== '1')
    throw new RunError(`--server-metrics ${url} is not loopback: set ALLOW_REMOTE=1 to read another host on purpose`);
  let text: string;
  try {
    const r = await httpCall(url, { signal: AbortSignal.timeout(3000), maxBytes: MAX_EXPOSITION_BYTES });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    if (r.text === null) throw new Error('more than 4 MiB of metrics');
    text = r.text;
  } catch (e) {
    throw new RunError(`--server-metrics ${url} did not answer: ${(e as Error).message}; nothing was run`);
  }
  if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? [-+0-9.eEInfa]+/m.test(text))
    throw new RunError(`--server-metrics ${url} answered, but not with Prometheus metrics; nothing was run`);
}

/** Resolves when host:port of a --server-url accepts a TCP connection; a one-line RunError otherwise. */
async function reachable(serverUrl: string): Promise<void> {
  let u: URL;
  try {
    u = new URL(serverUrl);
  } catch {
    throw new RunError(`--server-url must be a URL like ws://127.0.0.1:9000, got '${serverUrl}'`);
  }
  const port = Number(u.port || (u.protocol === 'wss:' || u.protocol === 'https:' ? 443 : 80));
  const host = u.hostname.replace(/^\[|\]$/g, '');
  await new Promise<void>((res, rej) => {
    const sock = connect({ host, port, timeout: 3000 });
    const fail = (why: string) => {
      sock.destroy();
      rej(
        new StackError(
          `cannot reach --server-url ${serverUrl} (${why}): start your server or fix the URL; nothing was run`,
        ),
      );
    };
    sock.once('connect', () => {
      sock.destroy();
      res();
    });
    sock.once('timeout', () => fail('no answer in 3 s'));
    sock.once('error', (e: NodeJS.ErrnoException) => fail(e.code ?? e.message));
  });
}

/** What the CLI sees of a run outside k6's numbers: the tester's own faults (INVALID) and the faults it applied. */
interface Watch {
  interrupted: boolean;
  stuck: boolean;
  /** Why the tester cannot be trusted for this run (INVALID), found outside k6. */
  invalid: string[];
  applied: ChaosEvent[];
  k6Code: number;
  processes: Record<string, ProcStats | null>;
  /** Each process's RSS and CPU every second (process-samples.csv: the report's processes chart). */
  processSeries?: { process: string; t: number; rss_mib: number; cpu_pct: number }[];
  /** The server's own metrics over the run (server-samples.csv), where it exposes them. */
  serverSeries?: ServerSample[];
  /** Stopped early by --abort-on-invalid: the saturation reasons that stopped it. */
  aborted?: string[];
  /** Stopped because the k6 device grew past its memory bound (k6DeviceRssBoundMiB): why. */
  overrun?: string;
  /** k6 still held links CLOSE_ANSWER_SLACK_MS past the run's end (closes the server never answered): why. */
  closesUnanswered?: string;
}

/** The stack for one run: the reference server (or a proxy in front of --server-url) and Toxiproxy on free ports. */
async function startRunStack(
  opts: RunOptions,
  serverFlags: Partial<ServerConfig>,
  log: (l: string) => void,
  instances = 1,
): Promise<Stack> {
  return startStack({
    serverUrl: opts.serverUrl,
    serverPort: opts.serverUrl ? undefined : await pickFreePort(),
    toxiproxyPort: await pickFreePort(),
    proxyPorts: { voice: 0 },
    server: serverFlags,
    // Devices that bypass Toxiproxy (--direct) need none: nothing is started that the run does not use.
    // Each k6 instance sends its devices through shards of its own.
    toxiproxyShards: opts.direct
      ? 0
      : (opts.toxiproxyShards ?? Math.max(instances, toxiproxyShardsFor(opts.devices ?? 0))),
    log: (l) => log(`  ${l}`),
  });
}

/** One k6 process of a run: its execution segment of the fleet, its folder, its device engine and its REST API. */
interface Instance {
  index: number;
  /** Where this instance's k6 writes (the run folder itself when the run has one instance). */
  dir: string;
  vars: K6Vars;
  engine: RunningEngine | null;
}

/** k6's execution-segment flags for instance i of n: k6 gives each its slice of every scenario (none for one). */
function segmentArgs(i: number, n: number): string[] {
  if (n <= 1) return [];
  const at = (k: number) => (k === 0 ? '0' : k === n ? '1' : `${k}/${n}`);
  const sequence = Array.from({ length: n + 1 }, (_, k) => at(k)).join(',');
  return ['--execution-segment', `${at(i)}:${at(i + 1)}`, '--execution-segment-sequence', sequence];
}

/**
 * The run contract for one instance: the plan's variables and where this stack and this folder are. An instance's
 * devices go through its own Toxiproxy shards (every n-th); the chaos timeline reaches every shard (TOXIPROXY_URL).
 */
function runVars(
  plan: ReturnType<typeof planRun>,
  stack: Stack,
  opts: RunOptions,
  dir: string,
  tokenFile: string | null,
  instance = 0,
  instances = 1,
): K6Vars {
  const urls = shardUrls(stack);
  const own = stack.shards.filter((_, k) => k % instances === instance);
  const targets = (own.length ? own : stack.shards.slice(instance % Math.max(1, stack.shards.length)).slice(0, 1)).map(
    (sh) => sh.targetUrl,
  );
  const vars: K6Vars = {
    ...plan.vars,
    TARGET_URL: opts.direct ? stack.serverWsUrl : targets.join(','),
    ...(urls.toxiproxyUrl ? { TOXIPROXY_URL: urls.toxiproxyUrl } : {}),
    CONTROL_URL: stack.controlUrl,
    SERVER_URL: stack.serverHttpUrl,
    RESULTS_DIR: dir,
    // The CLI judges the run (it also sees processes and interrupts): k6's summary prints metrics, not a verdict.
    VERDICT: 'cli',
  };
  if (tokenFile) vars.TOKEN_FILE = tokenFile;
  if (instances > 1) vars.SUMMARY_TABLE = 'off';
  if (opts.serverUrl && !isLoopbackUrl(opts.serverUrl)) vars.ALLOW_REMOTE = '1';
  // Through Toxiproxy the URL names the proxy: the devices verify the server by its own name.
  const tlsName = opts.direct ? undefined : tlsServerName(opts.serverUrl);
  if (tlsName) vars.TLS_SERVER_NAME = tlsName;
  if (opts.insecureTls) vars.TLS_INSECURE = '1';
  if (opts.provisionUrl) vars.PROVISION_URL = opts.provisionUrl;
  return vars;
}

/** k6's execution status while it waits, VUs initialised, for a paused test to be resumed (lib.ExecutionStatus). */
const K6_PAUSED_BEFORE_RUN = 4;
/** k6's execution status while its VUs run (after setup, before teardown). */
const K6_RUNNING = 7;

/** k6's execution status from its REST API (lib.ExecutionStatus, a number; older k6 named it), null if unanswered. */
async function k6Status(api: string): Promise<number | null> {
  const names = ['Created', 'InitVUs', 'InitExecutors', 'InitDone', 'PausedBeforeRun', 'Started', 'Setup', 'Running'];
  try {
    const r = await httpJson<{ data?: { attributes?: { status?: unknown } } }>(`${api}/v1/status`, {
      signal: AbortSignal.timeout(2000),
    });
    const s = r.json.data?.attributes?.status;
    return typeof s === 'number' ? s : typeof s === 'string' && names.includes(s) ? names.indexOf(s) : null;
  } catch {
    return null; /* not listening yet, or gone */
  }
}
/**
 * After the run's end (counted from when k6's VUs start), how long k6 may still run them before the tester's network
 * closes their links: k6's own limit is 20 s past the end (k6-fleet.ts: maxDuration + gracefulStop).
 */
const CLOSE_ANSWER_SLACK_MS = 25_000;

/**
 * Starts the instances together, the way the k6-operator starts its runners: each k6 was started `--paused
 * --no-setup`; once every one has initialised its VUs and waits, setup() runs once (in instance 0, through k6's REST
 * API), its data (the chaos timeline's epoch among it) goes to every instance, and all are resumed. So every
 * instance's fault windows are the same instants. Returns why not, if not.
 */
async function startTogether(apis: string[], gone: () => string | null, timeoutMs = 300_000): Promise<string | null> {
  const deadline = Date.now() + timeoutMs;
  const ready = new Set<string>();
  while (ready.size < apis.length) {
    const why = gone();
    if (why) return why;
    if (Date.now() > deadline) return `the k6 instances did not all initialise in ${timeoutMs / 1000} s`;
    for (const api of apis) {
      if (ready.has(api)) continue;
      if ((await k6Status(api)) === K6_PAUSED_BEFORE_RUN) ready.add(api);
    }
    if (ready.size < apis.length) await new Promise((res) => setTimeout(res, 200));
  }
  type Envelope = { data?: { attributes?: { data?: unknown } }; errors?: { title?: string; detail?: string }[] };
  const setup = await httpCall(`${apis[0]}/v1/setup`, { method: 'POST', signal: AbortSignal.timeout(60_000) }).then(
    (r) => ({ ok: r.ok, body: jsonOr<Envelope>(r.text, {}) }),
    (e: Error) => ({ ok: false, body: { errors: [{ detail: e.message }] } as Envelope }),
  );
  if (!setup.ok) {
    const e = setup.body.errors?.[0];
    return `setup() failed in instance 0: ${e?.detail ?? e?.title ?? 'no detail'}`;
  }
  const data = JSON.stringify(setup.body.data?.attributes?.data ?? null);
  const call = (api: string, method: string, path: string, body: string) =>
    httpCall(`${api}${path}`, { method, body, signal: AbortSignal.timeout(10_000) }).then(
      (r) => r.ok,
      () => false,
    );
  const given = await Promise.all(apis.slice(1).map((api) => call(api, 'PUT', '/v1/setup', data)));
  if (given.some((ok) => !ok)) return `setup data could not be given to instance ${given.indexOf(false) + 1}`;
  const resume = JSON.stringify({ data: { type: 'status', id: 'default', attributes: { paused: false } } });
  const resumed = await Promise.all(apis.map((api) => call(api, 'PATCH', '/v1/status', resume)));
  return resumed.every(Boolean) ? null : `k6 instance ${resumed.indexOf(false)} could not be resumed`;
}

/** The run's k6 processes: the one of each instance, spawned and watched. */
interface K6Child {
  k6: ReturnType<typeof spawnK6>;
  logPath: string;
  api: string;
  /** Adds a line of the CLI's own to this instance's k6.log (while k6 runs). */
  note(line: string): void;
}

/** Spawns instance `inst`'s k6: its output into its k6.log (chaos events decoded into `w.applied` on the way). */
async function spawnInstance(
  inst: Instance,
  instances: number,
  opts: RunOptions,
  script: string,
  w: Watch,
  log: (l: string) => void,
): Promise<K6Child> {
  const args: string[] = [...segmentArgs(inst.index, instances)];
  // Several instances need every raw sample: their percentiles are merged from them (merge-instances.ts).
  if (opts.charts !== false || instances > 1) args.push('--out', `json=${join(inst.dir, 'samples.json.gz')}`);
  for (const o of opts.outputs ?? []) args.push('--out', o);
  if (opts.prometheus) args.push('--out', 'experimental-prometheus-rw');
  // Each instance's series apart in the user's outputs (Prometheus would otherwise see two writers of one series).
  if (instances > 1) args.push('--tag', `instance=${inst.index}`, '--paused', '--no-setup');
  // k6's REST API on a port of its own (the progress line reads the fleet's counters from it); k6's own progress
  // bar counts VU iterations, not devices, so it is off (-q) and the CLI draws one that counts devices.
  const apiPort = await pickFreePort();
  args.push('--address', `127.0.0.1:${apiPort}`, '-q');
  // WAKESTORM_K6_PPROF=1: k6's Go profiles at http://127.0.0.1:<port>/debug/pprof/ (the port is in k6's --address).
  if (process.env.WAKESTORM_K6_PPROF === '1') args.push('--profiling-enabled');
  const echo = opts.echo !== false;
  // On a terminal k6 draws its own progress bars on our stdout; its logs (chaos events among them) come on stderr.
  const tty = echo && !!process.stdout.isTTY && instances === 1;
  // Everything k6 prints is kept in k6.log, echoed or not (logs, warnings, Go runtime traces).
  const logPath = join(inst.dir, 'k6.log');
  const k6Log = createWriteStream(logPath);
  // A full or read-only disk: the run goes on (k6's output still reaches the terminal) and ends INVALID, saying so.
  k6Log.on('error', (e) => w.invalid.push(fsProblem(e, logPath)));
  const prefix = instances > 1 ? `[${inst.index}] ` : '';
  const k6 = spawnK6({
    script,
    vars: inst.vars,
    args,
    env: {
      ...(opts.dashboard === false
        ? {}
        : {
            K6_WEB_DASHBOARD: 'true',
            K6_WEB_DASHBOARD_PORT: '-1',
            K6_WEB_DASHBOARD_PERIOD: '2s',
            K6_WEB_DASHBOARD_EXPORT: join(inst.dir, 'k6-dashboard.html'),
            // The voice fleet's panels instead of k6's HTTP ones (scripts/dashboard.ts).
            XK6_DASHBOARD_CONFIG: writeDashboardConfig(join(inst.dir, 'k6-dashboard.json')),
          }),
      ...(opts.prometheus ? prometheusEnv(opts.prometheus) : {}),
      ...runTls(opts).env,
      ...k6GcEnv(deviceEngine(opts)),
    },
    // A token given in the environment stays with the CLI: k6 reads TOKEN_FILE. K6_OUT came in as an --out.
    unset: ['TOKEN', 'K6_OUT'],
    cwd: ROOT,
    detached: true,
    fdLimit: opts.fdLimit,
    inheritStdout: tty,
    onLine: (line, stream) => {
      k6Log.write(`${line}\n`);
      const e = decodeChaosEvent(line);
      if (e) {
        w.applied.push(e);
        if (echo) log(`  chaos: ${e.fault} ${e.phase}${e.ok ? '' : ` FAILED: ${e.detail}`}`);
      } else if (echo) (stream === 'stdout' ? process.stdout : process.stderr).write(`${prefix}${line}\n`);
    },
  });
  void k6.closed.then(() => k6Log.end());
  const ended = new Promise<void>((res) => k6Log.once('close', res));
  return {
    k6: { child: k6.child, closed: k6.closed.then(async (r) => (await ended, r)) },
    logPath,
    api: `http://127.0.0.1:${apiPort}`,
    note: (line) => {
      if (!k6Log.writableEnded) k6Log.write(`${line}\n`);
    },
  };
}

/**
 * Runs the instances' k6 and watches them to the end: their output into k6.log (chaos events decoded on the way), the
 * stack (a Toxiproxy that dies stops k6: INVALID), signals (one SIGINT forwarded, a second one kills), a watchdog, the
 * processes' CPU and memory. Whatever made the tester untrustworthy is in the returned `invalid`.
 */
async function watchK6(
  opts: RunOptions,
  instances: Instance[],
  script: string,
  stack: Stack,
  log: (l: string) => void,
  scenarioMs: number | null,
  fleet: { devices: number | null; vus: number | null } = { devices: null, vus: null },
): Promise<Watch> {
  const w: Watch = { interrupted: false, stuck: false, invalid: [], applied: [], k6Code: 1, processes: {} };
  const n = instances.length;
  const children: K6Child[] = [];
  for (const inst of instances) children.push(await spawnInstance(inst, n, opts, script, w, log));
  const killAll = (sig: NodeJS.Signals) => {
    for (const c of children) c.k6.child.kill(sig);
  };
  const pids = children.map((c) => c.k6.child.pid!);
  const engines = instances.flatMap((i) => (i.engine ? [i.engine] : []));
  opts.onStarted?.({
    k6Pid: pids[0]!,
    k6Pids: pids,
    serverPid: stack.serverPid,
    toxiproxyPid: stack.toxiproxyPid,
    toxiproxyPids: stack.shards.map((sh) => sh.pid),
    enginePid: engines[0]?.pid ?? null,
    enginePids: engines.map((e) => e.pid),
    serverHttpUrl: stack.serverHttpUrl,
    startedAt: Date.now(),
  });
  // The tester's own health for the report: CPU and memory of every process of the run, once a second.
  const sampler = new Sampler();
  sampler.start({
    k6: pids,
    server: stack.serverPid,
    toxiproxy: stack.shards.map((sh) => sh.pid),
    ...(engines.length ? { engine: engines.map((e) => e.pid) } : {}),
  });
  // The server's own view over time: the reference server's /metrics, or the user's --server-metrics.
  const serverMetricsUrl = opts.serverMetrics ?? (opts.serverUrl ? null : `${stack.serverHttpUrl}/metrics`);
  const serverWatch = serverMetricsUrl ? watchServerMetrics(serverMetricsUrl) : null;
  const sampledFrom = Date.now();
  const vars = instances[0]!.vars;
  const durationMs = vars.DURATION ? parseDuration(vars.DURATION, 'DURATION') : (scenarioMs ?? 0);
  const echo = opts.echo !== false;
  const stopAll = (why: string) => {
    w.invalid.push(why);
    killAll('SIGINT');
  };
  // Every process the numbers pass through answers a heartbeat; the generator's lag is read live (tester-watch.ts).
  const noteAll = (line: string) => {
    for (const c of children) c.note(`wakestorm: ${line}`);
  };
  const tester = watchTester({
    beats: [
      ...children.map((c, i) => ({ name: n > 1 ? `k6 instance ${i}` : 'k6', url: `${c.api}/v1/status` })),
      ...engines.map((e) => ({
        name: `the device engine (pid ${e.pid})`,
        url: e.url.replace(/^ws/, 'http').replace(/\/control$/, '/health'),
      })),
      ...stack.shards.map((sh) => ({ name: `Toxiproxy (pid ${sh.pid})`, url: `${sh.toxiproxyUrl}/version` })),
    ],
    k6Apis: children.map((c) => c.api),
    engine: deviceEngine(opts),
    abort: opts.abortOnInvalid ?? !process.stdout.isTTY,
    onStall: (why) => {
      log(`\nwakestorm run: ${why}; stopping k6 (the run is INVALID)`);
      noteAll(why);
      stopAll(why);
      // A frozen k6 takes no signal until it runs again: killed if it has not stopped by then.
      setTimeout(() => killAll('SIGKILL'), 20_000).unref();
    },
    onSaturation: (reasons, atMs) => {
      const said = reasons.length
        ? `the tester is saturated at ${Math.round(atMs / 1000)} s: ${reasons.join('; ')}`
        : `the tester is back under its saturation bounds at ${Math.round(atMs / 1000)} s`;
      noteAll(said);
      if (echo) log(`\nwakestorm run: ${said}`);
    },
    onAbort: (reasons) => {
      const why = `stopped early (--abort-on-invalid): ${reasons.join('; ')} for ${ABORT_GRACE_MS / 1000} s`;
      log(`\nwakestorm run: ${why}; the run is INVALID`);
      noteAll(why);
      w.aborted = reasons;
      killAll('SIGINT');
    },
  });
  // The k6 device reads every message whole: a server's huge frames or flood grow k6 with what it sends. Past its
  // bound the run stops (a FAIL when the devices saw the server break the protocol, else INVALID). k6 answers SIGINT
  // only after its event loop drains what it already read, and its sockets read on meanwhile: so the guard reads /proc
  // itself four times a second, and the flood is cut where the tester can cut it (Toxiproxy's proxies off: every link
  // closes), and k6 is killed outright past twice its bound when that does not stop it (k6KillRule; its summary is lost
  // then: the run is INVALID).
  // Only a wakestorm scenario's fleet is known (a plain k6 script, such as the bench's baseline, is not bounded).
  const rssBound =
    engines.length || fleet.devices === null || fleet.vus === null
      ? null
      : k6DeviceRssBoundMiB(fleet.devices, fleet.vus);
  // The tester's network off: every device's link closes and nothing more reaches k6 (the memory and end guards).
  const switchProxiesOff = () => {
    for (const sh of stack.shards)
      void sh.toxiproxy
        .proxies()
        .then((ps) => Promise.all(Object.keys(ps).map((name) => sh.toxiproxy.setEnabled(name, false))))
        .catch(() => {});
  };
  const k6Rss = () => {
    let sum = 0;
    for (const pid of pids)
      try {
        sum += rssMiB(pid) || 0;
      } catch {
        /* exited */
      }
    return sum;
  };
  let overrunKilled = false;
  // Set at the overrun: whether k6 reads on past what the cut allows (tester-watch.ts k6KillRule).
  let killNow: ((rss: number, now: number) => boolean) | null = null;
  // Armed only where there is a bound (the k6 device): a native run's k6 holds no device.
  const memoryGuard =
    rssBound === null
      ? undefined
      : setInterval(() => {
          const rss = k6Rss();
          if (killNow?.(rss, Date.now()) && !overrunKilled) {
            overrunKilled = true;
            const why = `k6 (the k6 device) went on growing to ${Math.round(rss)} MiB, past ${K6_KILL_FACTOR}x its bound of ${rssBound} MiB${stack.shards.length ? ' and still growing after its links were cut' : ''}, and was killed: its numbers are lost`;
            log(`\nwakestorm run: ${why}`);
            w.invalid.push(why);
            killAll('SIGKILL');
          }
          if (rss <= rssBound || w.overrun) return;
          w.overrun = `k6 (the k6 device) grew to ${Math.round(rss)} MiB, past its bound of ${rssBound} MiB for ${fleet.devices} devices in ${fleet.vus} VUs: stopped`;
          killNow = k6KillRule(rssBound, stack.shards.length > 0, Date.now());
          log(`\nwakestorm run: ${w.overrun}`);
          noteAll(w.overrun);
          killAll('SIGINT');
          switchProxiesOff();
          // With its links closed k6 no longer grows; it may take a while to work through what it had read
          // (over 10 s for a 100-device flood on 2 cores): killed only if it has not ended in a minute (or by the
          // kill rule, above).
          setTimeout(() => killAll('SIGKILL'), 60_000).unref();
        }, K6_GUARD_MS);
  const stopProgress = k6Progress(
    children.map((c) => c.api),
    durationMs,
    opts.progress ?? (echo ? (process.stdout.isTTY && n === 1 ? 'tty' : 'lines') : 'off'),
    () => tester.note(),
  );
  // The stack is watched for the whole run: a Toxiproxy that dies makes the numbers meaningless, so k6 stops at once.
  stack.onExit((e) => {
    if (e.tool === 'toxiproxy') {
      log(`\nwakestorm run: ${e.message}; stopping k6 (the run is INVALID)`);
      stopAll(`${e.message}: the network under test vanished`);
    } else log(`\nwakestorm run: ${e.message} (the server's own failure: the devices' numbers show it)`);
  });
  // The devices live in the engine: an engine that dies leaves k6 recording nothing, so k6 stops at once.
  for (const inst of instances)
    inst.engine?.onExit((message) => {
      const who = n > 1 ? `instance ${inst.index}: ` : '';
      log(`\nwakestorm run: ${who}${message}; stopping k6 (the run is INVALID)`);
      stopAll(`${who}${message}: the devices vanished`);
    });
  // An instance that ends while the others still run (it failed) leaves its slice of the fleet unmeasured.
  const exited = new Array<string | null>(n).fill(null);
  children.forEach((c, i) => void c.k6.closed.then((r) => (exited[i] = `k6 instance ${i} exited ${r.code}`)));
  const onSignal = () => {
    if (w.interrupted) {
      killAll('SIGKILL');
      return;
    }
    w.interrupted = true;
    markStopping();
    log('\nwakestorm run: interrupted; stopping k6 (the run will be INVALID; Ctrl-C again to kill it)');
    killAll('SIGINT');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  opts.signal?.addEventListener('abort', onSignal);
  // Watchdog: at 10k devices in 1000 VUs on 2 cores, one k6 v2.2 VU once kept sockets open past maxDuration and
  // gracefulStop, idle, and ignored SIGTERM (k6 websockets has no close-handshake timeout; the exact cause is not
  // pinned down). Nothing may hang: past the run's length plus slack, k6 is interrupted, then killed, and the run is
  // marked incomplete (run.json k6_stuck).
  // The scenario's own duration when no --duration was given (a soak's default outlasts a fixed guess); several
  // instances also get the time they take to initialise before they start together.
  const limitMs = (durationMs || 600_000) + 120_000 + (n > 1 ? 300_000 : 0);
  const watchdog = setTimeout(() => {
    w.stuck = true;
    log(
      `wakestorm run: k6 still running ${Math.round(limitMs / 1000)} s after start: interrupting it (a stuck VU; see run.json)`,
    );
    killAll('SIGINT');
    setTimeout(() => killAll('SIGKILL'), 15_000).unref();
  }, limitMs);
  if (n > 1) {
    const why = await startTogether(
      children.map((c) => c.api),
      () => (w.interrupted ? 'interrupted' : (exited.find((e) => e !== null) ?? null)),
    );
    if (why && !w.interrupted) stopAll(`the k6 instances could not start together: ${why}`);
    else if (!why) log(`wakestorm run: ${n} k6 instances initialised and started together`);
  }
  // k6 closes a socket only when its server answers the close (RFC 6455 §5.5.1: it must); k6 v2.2 has no timeout for
  // that, so a server that stops reading keeps k6 running past the run's end until the watchdog. The devices stop at
  // the run's end and k6's own limit (maxDuration + gracefulStop) is 20 s later: past that the tester's network closes
  // the links (Toxiproxy's proxies off), k6 ends with its numbers, and the run FAILs naming the unanswered closes.
  // With --direct there is no network of the tester's to switch off: the watchdog stays the bound.
  let endGuard: NodeJS.Timeout | null = null;
  const cutUnanswered = async () => {
    if (w.interrupted || w.overrun || w.aborted || (await k6Status(children[0]!.api)) !== K6_RUNNING) return;
    w.closesUnanswered = `the server answered no close: k6's devices still held links ${CLOSE_ANSWER_SLACK_MS / 1000} s after the run's end (a server must answer a close, RFC 6455 §5.5.1; one that stopped reading never does), so the tester's network closed them`;
    log(`\nwakestorm run: ${w.closesUnanswered}`);
    noteAll(w.closesUnanswered);
    switchProxiesOff();
  };
  // Armed when k6's VUs start running (the fleet's end is counted from then), checked once a second until then.
  const armEndGuard = async () => {
    while (!ended && durationMs > 0 && stack.shards.length) {
      const st = await k6Status(children[0]!.api);
      if (st !== null && st >= K6_RUNNING) {
        if (st === K6_RUNNING && !ended)
          endGuard = setTimeout(() => void cutUnanswered(), durationMs + CLOSE_ANSWER_SLACK_MS);
        return;
      }
      await new Promise((res) => setTimeout(res, 1000));
    }
  };
  let ended = false;
  void armEndGuard();
  const ends = await Promise.all(children.map((c) => c.k6.closed));
  ended = true;
  if (endGuard) clearTimeout(endGuard);
  clearInterval(memoryGuard);
  tester.stop();
  stopProgress();
  sampler.stop();
  w.serverSeries = serverWatch?.stop() ?? [];
  const names = ['k6', 'server', ...(stack.shards.length ? ['toxiproxy'] : []), ...(engines.length ? ['engine'] : [])];
  const sampledTo = Date.now();
  for (const name of names) w.processes[name] = sampler.stats(name, sampledFrom, sampledTo);
  w.processSeries = names.flatMap((name) =>
    sampler.series(name, sampledFrom, sampledTo).map((x) => ({ process: name, ...x })),
  );
  clearTimeout(watchdog);
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  opts.signal?.removeEventListener('abort', onSignal);

  // What only the CLI sees: why the tester may not be trusted for this run.
  if (w.interrupted) w.invalid.push('the run was interrupted (SIGINT/SIGTERM) before it finished');
  if (w.stuck) w.invalid.push('k6 did not stop by itself and was killed by the watchdog (a stuck VU)');
  if (w.aborted)
    w.invalid.push(
      `stopped early (--abort-on-invalid): the generator could not end valid for ${ABORT_GRACE_MS / 1000} s: ${w.aborted.join('; ')}`,
    );
  // k6's exit: the worst of the instances (a failure over a threshold breach over success).
  w.k6Code = ends.find((e) => e.code !== 0 && e.code !== 99)?.code ?? ends.find((e) => e.code === 99)?.code ?? 0;
  if (!w.interrupted && !w.stuck && !w.aborted && !w.overrun && !w.invalid.length) {
    ends.forEach(({ code, signal }, i) => {
      if (code === 0 || code === 99) return;
      const why = signal
        ? `k6 was killed (${signal})`
        : `k6 exited ${code}${K6_EXIT[code] ? ` (${K6_EXIT[code]})` : ''}`;
      const err = lastK6Error(children[i]!.logPath);
      w.invalid.push(`${n > 1 ? `instance ${i}: ` : ''}${why}${err ? `: ${err}` : ''}`);
    });
  }
  w.invalid.push(...unappliedFaults([], w.applied));
  return w;
}

/**
 * The run's summary: k6's own for one instance; for several, one summary merged from all their raw samples (exact
 * percentiles), with samples.json.gz, scenario.json and the planned events of the whole run beside it. An instance
 * whose own numbers say the tester failed makes the run INVALID, named.
 */
async function summaryOf(
  dir: string,
  instances: Instance[],
  slos: Slo[],
  w: Watch,
  keepSamples: boolean,
): Promise<SummaryData | null> {
  if (instances.length === 1) return readJson<SummaryData>(join(dir, 'summary.json'));
  const r = await mergeInstanceDirs(
    dir,
    instances.map((i) => i.dir),
    slos,
    keepSamples,
  );
  w.invalid.push(...r.invalid);
  return r.summary;
}

/**
 * After k6: every fault undone on every shard before the server's metrics are scraped (stack.stop() then drains
 * the server and stops Toxiproxy last); k6's summary read back; events.json rewritten with what was applied.
 */
async function collectResults(
  stack: Stack,
  dir: string,
  w: Watch,
  summary: SummaryData | null,
  metricsUrl = `${stack.serverHttpUrl}/metrics`,
): Promise<void> {
  await Promise.all(stack.shards.map((sh) => sh.toxiproxy.reset().catch(() => {})));
  let metrics = `# ${metricsUrl} was not reachable at the end of the run\n`;
  try {
    const m = await httpCall(metricsUrl, { signal: AbortSignal.timeout(3000), maxBytes: MAX_EXPOSITION_BYTES });
    const text = m.ok ? m.text : null;
    if (text !== null) metrics = text;
  } catch {
    /* said in the file */
  }
  const write = (file: string, text: string) => {
    try {
      writeResult(join(dir, file), text);
    } catch (e) {
      w.invalid.push((e as Error).message);
    }
  };
  write('server-metrics.txt', metrics);
  const planned = readJson<EventsFile>(join(dir, 'events.json'))?.planned ?? [];
  if (!w.invalid.length && summary) w.invalid.push(...unappliedFaults(planned, w.applied));
  const events: EventsFile = { planned, applied: w.applied };
  write('events.json', JSON.stringify(events, null, 1));
}

export async function runScenario(opts: RunOptions): Promise<RunResult> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const tools = requireTools();
  // Everything that can be refused is refused before anything starts.
  const moduleDialect = await dialectModuleToJson(opts.dialect);
  if (moduleDialect) opts = { ...opts, dialect: moduleDialect.path };
  let plan: ReturnType<typeof planRun>;
  try {
    plan = planRun(opts);
  } catch (e) {
    moduleDialect?.remove();
    throw e;
  }
  const token = resolveToken(opts);
  const tls = runTls(opts);
  const instanceCount = opts.instances ?? instancesFor(opts.devices ?? 0);
  const inspected = inspectForSegments(
    plan.script,
    plan.vars,
    instanceCount,
    deviceEngine(opts) === 'native',
    `--instances ${instanceCount}`,
  );
  // --direct starts no Toxiproxy: a timeline's network faults would reach no device, and the run would pass unhurt.
  if (opts.direct && inspected.networkFaults.length)
    throw new RunError(
      `--direct connects the devices to the server itself, so the timeline's network faults (${inspected.networkFaults.join(', ')}) would reach no device: drop --direct, or pass --timeline none`,
    );
  const engineKind = deviceEngine(opts);
  if (engineKind === 'k6' && !opts.direct && tlsServerName(opts.serverUrl))
    throw new RunError(
      `--engine k6 cannot verify ${opts.serverUrl} through Toxiproxy (k6 takes the TLS name from the proxy's address, 127.0.0.1): use the native engine, or --direct`,
    );
  if (engineKind === 'native') {
    const refused = engineRefusal(engineCapabilities(), {
      wake: inspected.wakeMode ?? 'off',
      lifecycles: inspected.lifecycles,
      audio: inspected.audio,
    });
    if (refused) throw new EngineError(refused);
  }
  if (opts.prometheus !== undefined && !/^https?:\/\/[^\s/]+/.test(opts.prometheus)) {
    throw new RunError(
      `--prometheus must be a remote-write URL like http://127.0.0.1:9090/api/v1/write, got '${opts.prometheus}'`,
    );
  }
  // A fault only wakestorm's own server can suffer: refused before the stack starts, not INVALID after the run.
  if (opts.serverUrl && plan.controlFault)
    throw new RunError(
      `--timeline ${opts.timeline} has a ${plan.controlFault} fault, which wakestorm can apply only to the reference server it starts; with --server-url, restart your server yourself or use a timeline without it`,
    );
  if (opts.serverUrl) {
    // Load goes to loopback unless the user says otherwise on purpose (docs/ci.md): never on their behalf.
    if (!isLoopbackUrl(opts.serverUrl) && process.env.ALLOW_REMOTE !== '1')
      throw new RunError(
        `--server-url ${opts.serverUrl} is not loopback: set ALLOW_REMOTE=1 to load another host on purpose; nothing was run`,
      );
    await reachable(opts.serverUrl);
    // One real upgrade as a device makes it: credentials or a path the server refuses stop here, naming the status.
    await preflightUpgrade({
      serverUrl: opts.serverUrl,
      profile: opts.profile,
      dialect: opts.dialect,
      token: token ?? undefined,
      tls: tls.trust,
      provisionUrl: opts.provisionUrl,
    });
  }
  if (opts.serverMetrics) await serverMetricsReachable(opts.serverMetrics);
  const name = basename(plan.script, '.ts');
  const root = resultsRoot(opts.resultsRoot);
  const startedAt = new Date();
  const rd = claimRunDir(root, opts.runId ?? runIdFor(name, startedAt));
  const { dir } = rd;
  const secret = token ? writeSecretFile(token) : null;
  const serverFlags: Partial<ServerConfig> = { ...(opts.server ?? {}) };
  if (token && !opts.serverUrl) serverFlags.tokens = [...(serverFlags.tokens ?? []), token];
  if (!opts.serverUrl && opts.devices) Object.assign(serverFlags, serverSizedFor(opts.devices, serverFlags));

  let stack: Stack | null = null;
  const instances: Instance[] = [];
  let w: Watch = { interrupted: false, stuck: false, invalid: [], applied: [], k6Code: 1, processes: {} };
  let summary: SummaryData | null = null;
  const stopEngines = () => Promise.all(instances.map((i) => i.engine?.stop() ?? Promise.resolve()));
  try {
    log(`wakestorm run ${name}: starting the stack`);
    stack = await startRunStack(opts, serverFlags, log, instanceCount);
    for (let i = 0; i < instanceCount; i++) {
      // One instance writes into the run folder; several each into their own, merged at the end.
      const idir = instanceCount > 1 ? join(dir, `instance-${i}`) : dir;
      if (instanceCount > 1) mkdirSync(idir);
      const engine = engineKind === 'native' ? await startEngine(opts.fdLimit, tls.env) : null;
      const vars = runVars(plan, stack, opts, idir, secret?.path ?? null, i, instanceCount);
      if (engine) vars.ENGINE_URL = engine.url;
      instances.push({ index: i, dir: idir, vars, engine });
    }
    const engines = instances.flatMap((i) => (i.engine ? [i.engine.pid] : []));
    const where = engines.length ? ` (devices in the native engine, pid ${engines.join(', ')})` : '';
    const split = instanceCount > 1 ? `, ${instanceCount} k6 instances (execution segments)` : '';
    // The devices' target as runVars gives it: the server itself with --direct, else the Toxiproxy shards.
    const target = opts.direct ? `${stack.serverWsUrl} (direct)` : shardUrls(stack).targetUrl;
    log(
      `wakestorm run ${name}: k6 ${tools.k6Version} -> ${target}${plan.vars.TIMELINE ? ` with timeline ${plan.vars.TIMELINE}` : ''}${where}${split}`,
    );
    // k6 runs a shipped scenario as one bundled module (scripts/scenario-bundle.ts); k6 inspect read its sources.
    const k6Script = await k6ScriptFor(plan.script, ROOT);
    w = await watchK6(opts, instances, k6Script, stack, log, inspected.durationMs, inspected);
    await stopEngines();
    summary = await summaryOf(dir, instances, plan.slos, w, opts.charts !== false);
    // The instances printed no metrics table (SUMMARY_TABLE=off): the whole fleet's, from the merged summary.
    if (instanceCount > 1 && summary && opts.echo !== false) log(textSummary(summary, plan.slos, name, [], false));
    await collectResults(stack, dir, w, summary, opts.serverMetrics);
  } finally {
    await stopEngines();
    if (stack) {
      log('wakestorm run: tearing the stack down');
      await stack.stop();
    }
    secret?.remove();
    moduleDialect?.remove();
  }
  const endedAt = new Date();
  // The scenario's own SLOs as k6 resolved them (a scenario may replace the defaults); the CLI's plan when k6 wrote none.
  const resolved = readJson<ResolvedRun>(join(dir, 'scenario.json'));
  const slos = resolved?.slos ?? plan.slos;
  const unmatchedTypes = [
    ...new Set(instances.length ? instances.flatMap((i) => unmatchedTypesIn(join(i.dir, 'k6.log'))) : []),
  ];
  // Only a stopped k6 needs the log's word for what its devices saw (judge(): testerOverrun).
  const violationsLogged = w.overrun
    ? [...new Set(instances.flatMap((i) => violationKindsIn(join(i.dir, 'k6.log'))))]
    : undefined;
  const ctx = {
    unmatchedTypes,
    engine: engineKind,
    profiles: resolved?.profiles,
    testerOverrun: w.overrun,
    closesUnanswered: w.closesUnanswered,
    violationsLogged,
  };
  let judgement = judge(summary, slos, w.invalid, ctx);
  const seconds = (endedAt.getTime() - startedAt.getTime()) / 1000;
  // Results that cannot be written make the run INVALID (the tester failed to keep them), in one line; what can be
  // written still is, and nothing is ever half-written (writeResult).
  const writeOrInvalid = (file: string, text: () => string): boolean => {
    try {
      writeResult(join(dir, file), text());
      return true;
    } catch (e) {
      if (!w.invalid.includes((e as Error).message)) w.invalid.push((e as Error).message);
      judgement = judge(summary, slos, w.invalid, ctx);
      return false;
    }
  };
  writeOrInvalid('junit.xml', () => junitXml(judgement, name, seconds));
  if (w.processSeries?.length) writeOrInvalid('process-samples.csv', () => toCsv(w.processSeries!));
  if (w.serverSeries?.length) writeOrInvalid('server-samples.csv', () => toCsv(w.serverSeries!));
  const run: RunRecord = {
    run_id: rd.runId,
    scenario: name,
    script: plan.script,
    command: redactArgv(process.argv.slice(1)).join(' '),
    parameters: {
      ...plan.vars,
      server: opts.serverUrl ?? 'reference',
      server_flags: { ...serverFlags, tokens: serverFlags.tokens?.length ? ['<redacted>'] : undefined },
      direct: !!opts.direct,
      ...(tls.verification ? { tls_verification: tls.verification } : {}),
      engine: engineKind,
      auth: token ? 'token' : 'none',
    },
    slos,
    ...verdictFields(judgement),
    k6_exit_code: w.k6Code,
    incomplete: w.interrupted || w.stuck || !summary,
    k6_stuck: w.stuck,
    tools: { k6: tools.k6Version, toxiproxy: tools.toxiproxyVersion, node: process.version },
    git_commit: gitCommit(ROOT),
    machine: {
      hostname: hostname(),
      cores: cpus().length,
      cpu: cpus()[0]?.model ?? '',
      memory_gib: +(totalmem() / 2 ** 30).toFixed(1),
      platform: process.platform,
    },
    started_at: startedAt.toISOString(),
    ended_at: endedAt.toISOString(),
    processes: w.processes,
    unmatched_types: unmatchedTypes,
    tester_stopped:
      w.overrun || w.closesUnanswered
        ? { overrun: w.overrun, closes_unanswered: w.closesUnanswered, violations_logged: violationsLogged }
        : undefined,
    // Every parameter as the scenario resolved it (its defaults included): fleet, profile mix and profiles, timeline,
    // wake schedule, seed, SLOs. Null when k6 ended before its summary.
    resolved,
  };
  if (!writeOrInvalid('run.json', () => JSON.stringify({ ...run, ...verdictFields(judgement) }, null, 1))) {
    // The verdict changed to INVALID: junit.xml says so too, if it can still be written.
    writeOrInvalid('junit.xml', () => junitXml(judgement, name, seconds));
  }
  rmSync(join(dir, 'scenario.json'), { force: true });
  try {
    // Loaded only now: the chart libraries (vega) are ~45 MiB of the CLI's RSS, needless while k6 runs.
    const { renderReport } = await import('./report-html.ts');
    await renderReport(dir, { baseline: opts.baseline });
  } catch (e) {
    log(`wakestorm run: report not rendered: ${(e as Error).message}`);
  }
  try {
    publishRunDir(root, rd);
  } catch (e) {
    log(`wakestorm run: ${fsProblem(e)}; the results stay in ${rd.dir}`);
  }
  log(['', ...verdictLines(judgement)].join('\n'));
  if (opts.baseline && summary)
    for (const l of baselineLines(opts.baseline, {
      dir: rd.finalDir,
      run: { ...run, ...verdictFields(judgement) },
      summary,
    }))
      log(l);
  log(
    `wakestorm run ${name}: ${judgement.verdict.toUpperCase()}${run.incomplete ? ' (INCOMPLETE)' : ''}, exit ${judgement.exit_code}; report: ${join(rd.finalDir, 'report.html')}`,
  );
  return {
    code: judgement.exit_code,
    interrupted: w.interrupted,
    stuck: w.stuck,
    dir: rd.finalDir,
    runId: rd.runId,
    incomplete: run.incomplete,
    summary,
    slos,
    judgement,
  };
}
