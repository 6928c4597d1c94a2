// `wakestorm run`: tools → stack → k6 (dashboard export, samples) → results/<run-id>/ → teardown → k6's exit code.
// Results are written into a hidden partial folder and renamed into place at the end, so no run folder is half-written.
import { WakestormError } from '../core/errors.ts';
import { execFileSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { cpus, hostname, totalmem } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { parseProfileMix } from '../core/profiles.ts';
import { isLoopbackUrl, parseDuration, parseWake } from '../core/run-config.ts';
import { resolveSlos, type Slo } from '../core/slo.ts';
import { judge, junitXml, verdictLines, type Judgement } from '../core/verdict.ts';
import { readTokensFile, validateToken, type ServerConfig } from '../server/config.ts';
import { decodeChaosEvent, k6LogMessage, type ChaosEvent, type EventsFile, type PlannedEvent } from '../core/chaos-events.ts';
import { loadTimeline } from '../core/timelines.ts';
import { Sampler, type ProcStats } from './proc-sampler.ts';
import { renderReport } from './report-html.ts';
import { guardedSpawn } from './guarded-spawn.ts';
import { redactArgv, writeSecretFile } from './secret.ts';
import { markStopping } from './wrapper-watch.ts';
import { pickFreePort, shardUrls, StackError, startStack, toxiproxyShardsFor, type Stack } from './stack.ts';
import { k6Env, requireTools } from './tools.ts';

export const ROOT = new URL('../', import.meta.url).pathname;

export interface RunOptions {
  scenario: string;
  devices?: number;
  devicesPerVu?: number;
  duration?: string;
  profile?: string;
  timeline?: string;
  wake?: string;
  seed?: string;
  /** SLO overrides: name=value, name=off, or a .json SLO file. */
  slo?: string[];
  serverUrl?: string;
  server?: Partial<ServerConfig>;
  /** Aim the devices at the server directly, without Toxiproxy (capacity steps). */
  direct?: boolean;
  resultsRoot?: string;
  runId?: string;
  /** Extra k6 -e variables. */
  vars?: Record<string, string>;
  dashboard?: boolean;
  /** Write the per-sample JSON and the charts (default true). */
  charts?: boolean;
  /** Forward k6's output to the terminal (default true). */
  echo?: boolean;
  /** The progress line: redrawn in place (tty), a line every 10 s (lines), or none. Default: from echo and the terminal. */
  progress?: 'tty' | 'lines' | 'off';
  /** k6 outputs passed through as --out (e.g. csv=…, experimental-prometheus-rw). */
  outputs?: string[];
  log?: (line: string) => void;
  /** Aborts the run (as Ctrl-C does). */
  signal?: AbortSignal;
  /** Called once k6 runs, with the processes of the run (benches sample them). */
  onStarted?: (p: { k6Pid: number; serverPid: number | null; toxiproxyPid: number; toxiproxyPids: number[]; serverHttpUrl: string; startedAt: number }) => void;
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
  summary: { metrics: Record<string, { type: string; values: Record<string, number>; thresholds?: Record<string, { ok: boolean }> }> } | null;
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

/** Resolves `smoke`, `smoke.ts` or a path to a scenario file. */
export function resolveScenario(s: string): string {
  const candidates = [s, join(ROOT, 'scenarios', s), join(ROOT, 'scenarios', `${s}.ts`)];
  for (const c of candidates) if (existsSync(c) && c.endsWith('.ts')) return resolve(c);
  throw new RunError(`no scenario '${s}': give a file like scenarios/smoke.ts or a name (smoke, wake-latency, reconnect-storm, flaky-network, soak, capacity)`);
}

/** SLO flags → k6 -e variables (SLO_<name>=v, SLO_FILE=path). */
function sloVars(slo: string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of slo ?? []) {
    if (s.endsWith('.json')) {
      if (!existsSync(s)) throw new RunError(`--slo ${s}: no such file`);
      if (resolve(s).includes(',')) throw new RunError(`--slo ${s}: a path with a comma cannot be passed on (SLO_FILE is a comma-separated list)`);
      // Several files merge in order (a later one replaces an SLO of the same name).
      out.SLO_FILE = out.SLO_FILE ? `${out.SLO_FILE},${resolve(s)}` : resolve(s);
      continue;
    }
    const m = /^([a-z][a-z0-9_]*)=(off|-?\d+(?:\.\d+)?)$/.exec(s);
    if (!m) throw new RunError(`--slo '${s}' must be name=number, name=off, or a .json file (e.g. --slo response_p95=1500)`);
    out[`SLO_${m[1]}`] = m[2]!;
  }
  return out;
}

function readJson(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch {
    return null;
  }
}

function gitCommit(): string | null {
  try {
    return execFileSync('git', ['rev-parse', 'HEAD'], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

function stamp(d: Date): string {
  return d.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
}

/** Validates every flag before anything starts; returns the k6 variables. */
export function planRun(opts: RunOptions): { script: string; vars: Record<string, string>; slos: Slo[] } {
  const script = resolveScenario(opts.scenario);
  const vars: Record<string, string> = {};
  if (opts.devices !== undefined) {
    if (!Number.isInteger(opts.devices) || opts.devices < 1) throw new RunError(`--devices must be a positive integer, got ${opts.devices}`);
    vars.DEVICES = String(opts.devices);
  }
  if (opts.devicesPerVu !== undefined) vars.DEVICES_PER_VU = String(opts.devicesPerVu);
  let durationMs: number | undefined;
  if (opts.duration !== undefined) {
    durationMs = parseDuration(opts.duration, '--duration');
    vars.DURATION = opts.duration;
  }
  if (opts.profile !== undefined) {
    parseProfileMix(opts.profile, (p) => readFileSync(p, 'utf8'));
    vars.PROFILE = opts.profile.split(',').map((p) => (p.split(':')[0]!.endsWith('.json') ? resolve(p) : p)).join(',');
  }
  if (opts.timeline !== undefined) {
    loadTimeline(opts.timeline, (p) => readFileSync(p, 'utf8'), durationMs);
    vars.TIMELINE = opts.timeline.endsWith('.json') ? resolve(opts.timeline) : opts.timeline;
  }
  if (opts.wake !== undefined) {
    parseWake(opts.wake, { mode: 'off', interval_ms: 0, first_min_ms: 0, first_max_ms: 0 });
    vars.WAKE = opts.wake;
  }
  if (opts.seed !== undefined) vars.SEED = opts.seed;
  Object.assign(vars, sloVars(opts.slo), opts.vars ?? {});
  const slos = resolveSlos(vars, (p) => readFileSync(p, 'utf8'));
  return { script, vars, slos };
}

/**
 * Claims a fresh run id and its hidden partial folder. mkdir is atomic: two runs started in the same second never
 * share a folder (the second gets -2, -3, …).
 */
function claimRunDir(root: string, base: string): { runId: string; dir: string; finalDir: string } {
  mkdirSync(root, { recursive: true });
  for (let i = 1; i < 10_000; i++) {
    const runId = i === 1 ? base : `${base}-${i}`;
    const dir = join(root, `.${runId}.partial`);
    const finalDir = join(root, runId);
    if (existsSync(finalDir)) continue;
    try {
      mkdirSync(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw e;
    }
    // A run that finished between the two checks took this id: leave it to it.
    if (existsSync(finalDir)) {
      rmdirSync(dir);
      continue;
    }
    return { runId, dir, finalDir };
  }
  throw new RunError(`no free run id under ${root} for ${base}`);
}

/** The bearer token from --token or --token-file, checked like the server checks its own. */
function resolveToken(opts: RunOptions): string | null {
  // An empty value (a CI secret that is not set) is no token.
  const token = opts.token || undefined;
  const tokenFile = opts.tokenFile || undefined;
  if (token !== undefined && tokenFile !== undefined) throw new RunError('give --token or --token-file, not both');
  try {
    if (token !== undefined) return validateToken(token);
    if (tokenFile !== undefined) return validateToken(readTokensFile(tokenFile)[0]!.split(/\s+/)[0]!);
  } catch (e) {
    throw new RunError((e as Error).message.replace('--tokens-file', '--token-file'));
  }
  return null;
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
      rej(new StackError(`cannot reach --server-url ${serverUrl} (${why}): start your server or fix the URL; nothing was run`));
    };
    sock.once('connect', () => {
      sock.destroy();
      res();
    });
    sock.once('timeout', () => fail('no answer in 3 s'));
    sock.once('error', (e: NodeJS.ErrnoException) => fail(e.code ?? e.message));
  });
}

/** k6's exit codes that are not a verdict, in words (k6 errext/exitcodes). */
const K6_EXIT: Record<number, string> = {
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
function lastK6Error(logPath: string): string {
  let text = '';
  try {
    text = readFileSync(logPath, 'utf8');
  } catch {
    return '';
  }
  const lines = text.split('\n').filter((l) => /level=error/.test(l));
  const last = lines.at(-1);
  if (!last) return '';
  return (k6LogMessage(last) ?? last).split('\n')[0]!.slice(0, 300);
}

/**
 * Polls k6's REST API for the fleet's counters and shows how many devices are connected (links_up - links_down) and
 * what they did so far. Returns the function that stops it.
 */
function progress(api: string, durationMs: number, mode: 'tty' | 'lines' | 'off'): () => void {
  if (mode === 'off') return () => {};
  const t0 = Date.now();
  const counter = async (id: string) => {
    try {
      const r = await fetch(`${api}/v1/metrics/${id}`, { signal: AbortSignal.timeout(900) });
      if (!r.ok) return 0;
      return ((await r.json()) as { data: { attributes: { sample: { count?: number } } } }).data.attributes.sample.count ?? 0;
    } catch {
      return 0;
    }
  };
  let last = 0;
  let drawn = false;
  const timer = setInterval(async () => {
    const [started = 0, up = 0, down = 0, wakes = 0, drops = 0] = await Promise.all(['devices_started', 'links_up', 'links_down', 'wakes', 'connection_drops'].map(counter));
    const s = Math.round((Date.now() - t0) / 1000);
    const line = `  ${s}s/${Math.round(durationMs / 1000)}s  devices connected ${up - down}/${started}  wakes ${wakes}  links lost ${drops}`;
    if (mode === 'tty') {
      process.stdout.write(`\r${line}\x1b[K`);
      drawn = true;
    } else if (Date.now() - last >= 10_000) {
      last = Date.now();
      process.stdout.write(`${line}\n`);
    }
  }, 2000);
  return () => {
    clearInterval(timer);
    if (drawn) process.stdout.write('\n');
  };
}

/**
 * Evaluates the scenario's init context with the run's variables (`k6 inspect`), before anything starts: whatever the
 * scenario itself validates (its default timeline against --duration, profiles, SLOs, bounds) fails here as one line.
 */
function inspectScenario(k6: string, script: string, vars: Record<string, string>): void {
  const args = ['inspect'];
  for (const [k, v] of Object.entries(vars)) args.push('-e', `${k}=${v}`);
  args.push(script);
  try {
    execFileSync(k6, args, { cwd: ROOT, env: k6Env({}), stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
  } catch (e) {
    const err = e as { stderr?: Buffer; stdout?: Buffer; status?: number };
    const text = `${err.stderr?.toString() ?? ''}${err.stdout?.toString() ?? ''}`;
    const line = text.split('\n').find((l) => /level=error/.test(l)) ?? text.trim().split('\n')[0] ?? '';
    const first = (k6LogMessage(line) ?? line).split('\n')[0]!.replace(/^(GoError|[A-Za-z]*Error): /, '');
    throw new RunError(`${basename(script)}: ${first || `k6 inspect exited ${err.status}`}`);
  }
}

export async function runScenario(opts: RunOptions): Promise<RunResult> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const tools = requireTools();
  const plan = planRun(opts);
  const token = resolveToken(opts);
  inspectScenario(tools.k6, plan.script, plan.vars);
  if (opts.serverUrl) await reachable(opts.serverUrl);
  const name = basename(plan.script, '.ts');
  const root = resolve(opts.resultsRoot ?? join(ROOT, 'results'));
  const startedAt = new Date();
  const { runId, dir, finalDir } = claimRunDir(root, opts.runId ?? `${name}-${stamp(startedAt)}`);
  const secret = token ? writeSecretFile(token) : null;
  const serverFlags: Partial<ServerConfig> = { ...(opts.server ?? {}) };
  if (token && !opts.serverUrl) serverFlags.tokens = [...(serverFlags.tokens ?? []), token];

  let stack: Stack | null = null;
  let interrupted = false;
  let stuck = false;
  let code = 1;
  let summary: RunResult['summary'] = null;
  /** Why the tester cannot be trusted for this run (INVALID), found outside k6. */
  const invalid: string[] = [];
  const applied: ChaosEvent[] = [];
  let planned: PlannedEvent[] = [];
  const sampler = new Sampler();
  let sampledFrom = 0;
  const processes: Record<string, ProcStats | null> = {};
  try {
    log(`wakestorm run ${name}: starting the stack`);
    stack = await startStack({
      serverUrl: opts.serverUrl,
      serverPort: opts.serverUrl ? undefined : await pickFreePort(),
      toxiproxyPort: await pickFreePort(),
      proxyPorts: { voice: 0 },
      server: serverFlags,
      // Devices that bypass Toxiproxy (--direct) need only the one shard the stack always has.
      toxiproxyShards: opts.toxiproxyShards ?? (opts.direct ? 1 : toxiproxyShardsFor(opts.devices ?? 0)),
      log: (l) => log(`  ${l}`),
    });
    const urls = shardUrls(stack);
    const target = opts.direct ? stack.serverWsUrl : urls.targetUrl;
    const vars: Record<string, string> = {
      ...plan.vars,
      TARGET_URL: target,
      TOXIPROXY_URL: urls.toxiproxyUrl,
      CONTROL_URL: stack.controlUrl,
      SERVER_URL: stack.serverHttpUrl,
      RESULTS_DIR: dir,
      // The CLI judges the run (it also sees processes and interrupts): k6's summary prints metrics, not a verdict.
      VERDICT: 'cli',
    };
    if (secret) vars.TOKEN_FILE = secret.path;
    if (opts.serverUrl && !isLoopbackUrl(opts.serverUrl)) vars.ALLOW_REMOTE = '1';
    const args = ['run'];
    for (const [k, v] of Object.entries(vars)) args.push('-e', `${k}=${v}`);
    if (opts.charts !== false) args.push('--out', `json=${join(dir, 'samples.json.gz')}`);
    for (const o of opts.outputs ?? []) args.push('--out', o);
    // k6's REST API on a port of its own (the progress line reads the fleet's counters from it); k6's own progress
    // bar counts VU iterations, not devices, so it is off (-q) and the CLI draws one that counts devices.
    const apiPort = await pickFreePort();
    args.push('--address', `127.0.0.1:${apiPort}`, '-q');
    args.push(plan.script);
    const env = k6Env(
      opts.dashboard === false
        ? {}
        : { K6_WEB_DASHBOARD: 'true', K6_WEB_DASHBOARD_PORT: '-1', K6_WEB_DASHBOARD_PERIOD: '2s', K6_WEB_DASHBOARD_EXPORT: join(dir, 'k6-dashboard.html') },
    );
    // A token given in the environment stays with the CLI: k6 reads TOKEN_FILE. K6_OUT came in as an --out above.
    delete env.TOKEN;
    delete env.K6_OUT;
    log(`wakestorm run ${name}: k6 ${tools.k6Version} -> ${target}${plan.vars.TIMELINE ? ` with timeline ${plan.vars.TIMELINE}` : ''}`);
    // k6 gets its own process group: a terminal Ctrl-C reaches only us, and we forward exactly one SIGINT.
    const echo = opts.echo !== false;
    // On a terminal k6 draws its own progress bars on our stdout; its logs (chaos events among them) come on stderr.
    const tty = echo && !!process.stdout.isTTY;
    const k6 = guardedSpawn(tools.k6, args, { env, cwd: ROOT, stdio: ['ignore', tty ? 'inherit' : 'pipe', 'pipe'], detached: true }, opts.fdLimit);
    opts.onStarted?.({ k6Pid: k6.pid!, serverPid: stack.serverPid, toxiproxyPid: stack.toxiproxyPid, toxiproxyPids: stack.shards.map((sh) => sh.pid), serverHttpUrl: stack.serverHttpUrl, startedAt: Date.now() });
    // The tester's own health for the report: CPU and memory of every process of the run, once a second.
    sampler.start({ k6: k6.pid!, server: stack.serverPid, toxiproxy: stack.shards.map((sh) => sh.pid) });
    sampledFrom = Date.now();
    const stopProgress = progress(`http://127.0.0.1:${apiPort}`, parseDuration(plan.vars.DURATION ?? '0s', 'DURATION'), opts.progress ?? (echo ? (tty ? 'tty' : 'lines') : 'off'));
    // The stack is watched for the whole run: a Toxiproxy that dies makes the numbers meaningless, so k6 stops at once.
    stack.onExit((e) => {
      if (e.tool === 'toxiproxy') {
        invalid.push(`${e.message}: the network under test vanished`);
        log(`\nwakestorm run: ${e.message}; stopping k6 (the run is INVALID)`);
        k6.kill('SIGINT');
      } else log(`\nwakestorm run: ${e.message} (the server's own failure: the devices' numbers show it)`);
    });
    // Everything k6 prints is kept in k6.log, echoed or not (logs, warnings, Go runtime traces).
    const k6LogPath = join(dir, 'k6.log');
    const k6Log = createWriteStream(k6LogPath);
    const onLine = (line: string, stream: NodeJS.WriteStream) => {
      k6Log.write(`${line}\n`);
      const e = decodeChaosEvent(line);
      if (e) {
        applied.push(e);
        if (echo) log(`  chaos: ${e.fault} ${e.phase}${e.ok ? '' : ` FAILED: ${e.detail}`}`);
        return;
      }
      if (echo) stream.write(`${line}\n`);
    };
    const lines = (src: NodeJS.ReadableStream, stream: NodeJS.WriteStream) => {
      let buf = '';
      src.on('data', (d: Buffer) => {
        buf += d.toString();
        const parts = buf.split('\n');
        buf = parts.pop()!;
        for (const l of parts) onLine(l, stream);
      });
      src.on('end', () => buf && onLine(buf, stream));
    };
    if (!tty) lines(k6.stdout!, process.stdout);
    lines(k6.stderr!, process.stderr);
    const onSignal = () => {
      if (interrupted) {
        k6.kill('SIGKILL');
        return;
      }
      interrupted = true;
      markStopping();
      log('\nwakestorm run: interrupted; stopping k6 (the run will be INVALID; Ctrl-C again to kill it)');
      k6.kill('SIGINT');
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    opts.signal?.addEventListener('abort', onSignal);
    // Watchdog: at 10k devices in 1000 VUs on 2 cores, one k6 v2.2 VU once kept sockets open past maxDuration and
    // gracefulStop, idle, and ignored SIGTERM (k6 websockets has no close-handshake timeout; the exact cause is not
    // pinned down). Nothing may hang: past the run's length plus slack, k6 is interrupted, then killed, and the run is
    // marked incomplete (run.json k6_stuck).
    const limitMs = parseDuration(plan.vars.DURATION ?? '10m', 'DURATION') + 120_000;
    let watchdogFired = false;
    const watchdog = setTimeout(() => {
      watchdogFired = true;
      log(`wakestorm run: k6 still running ${Math.round(limitMs / 1000)} s after start: interrupting it (a stuck VU; see run.json)`);
      k6.kill('SIGINT');
      setTimeout(() => k6.kill('SIGKILL'), 15_000).unref();
    }, limitMs);
    let k6Signal: NodeJS.Signals | null = null;
    code = await new Promise<number>((res) =>
      k6.on('close', (c, sig) => {
        k6Signal = sig;
        res(c ?? (sig ? 128 + 9 : 1));
      }),
    );
    await new Promise<void>((res) => k6Log.end(res));
    stopProgress();
    sampler.stop();
    for (const n of ['k6', 'server', 'toxiproxy']) processes[n] = sampler.stats(n, sampledFrom, Date.now());
    clearTimeout(watchdog);
    if (watchdogFired) stuck = true;
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    opts.signal?.removeEventListener('abort', onSignal);

    // What only the CLI sees: why the tester may not be trusted for this run.
    if (interrupted) invalid.push('the run was interrupted (SIGINT/SIGTERM) before it finished');
    if (stuck) invalid.push('k6 did not stop by itself and was killed by the watchdog (a stuck VU)');
    if (!interrupted && !stuck && !invalid.length && code !== 0 && code !== 99) {
      const why = k6Signal ? `k6 was killed (${k6Signal})` : `k6 exited ${code}${K6_EXIT[code] ? ` (${K6_EXIT[code]})` : ''}`;
      const err = lastK6Error(k6LogPath);
      invalid.push(`${why}${err ? `: ${err}` : ''}`);
    }
    for (const e of applied) if (!e.ok) invalid.push(`fault ${e.fault} ${e.phase} could not be applied: ${e.detail ?? 'no detail'}`);

    // Teardown in order: k6 has stopped; every fault is undone on every shard before the server's metrics are scraped
    // (stack.stop() then drains the server and stops Toxiproxy last).
    await Promise.all(stack.shards.map((sh) => sh.toxiproxy.reset().catch(() => {})));
    // Results: the server's own view, the applied chaos, and everything needed to reproduce the run.
    try {
      const m = await fetch(`${stack.serverHttpUrl}/metrics`, { signal: AbortSignal.timeout(3000) });
      if (m.ok) writeFileSync(join(dir, 'server-metrics.txt'), await m.text());
    } catch {
      writeFileSync(join(dir, 'server-metrics.txt'), `# /metrics of ${stack.serverHttpUrl} was not reachable at the end of the run\n`);
    }
    try {
      summary = JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8'));
    } catch {
      summary = null;
    }
    planned = (readJson(join(dir, 'events.json')) as EventsFile | null)?.planned ?? [];
    if (!invalid.length && summary && applied.length < planned.length) {
      invalid.push(`${planned.length - applied.length} of ${planned.length} planned fault onsets and ends were never applied (the chaos driver stopped)`);
    }
    const events: EventsFile = { planned, applied };
    writeFileSync(join(dir, 'events.json'), JSON.stringify(events, null, 1));
  } finally {
    if (stack) {
      log('wakestorm run: tearing the stack down');
      await stack.stop();
    }
    secret?.remove();
  }
  const endedAt = new Date();
  // The scenario's own SLOs as k6 resolved them (a scenario may replace the defaults); the CLI's plan when k6 wrote none.
  const resolved = readJson(join(dir, 'scenario.json')) as { slos?: Slo[] } | null;
  const slos = resolved?.slos ?? plan.slos;
  const judgement = judge(summary as Parameters<typeof judge>[0], slos, invalid);
  writeFileSync(join(dir, 'junit.xml'), junitXml(judgement, name, (endedAt.getTime() - startedAt.getTime()) / 1000));
  const run = {
    run_id: runId,
    scenario: name,
    script: plan.script,
    command: redactArgv(process.argv.slice(1)).join(' '),
    parameters: { ...plan.vars, server: opts.serverUrl ?? 'reference', server_flags: { ...serverFlags, tokens: serverFlags.tokens?.length ? ['<redacted>'] : undefined }, direct: !!opts.direct, auth: token ? 'token' : 'none' },
    slos,
    exit_code: judgement.exit_code,
    k6_exit_code: code,
    verdict: judgement.verdict,
    verdict_line: judgement.headline,
    invalid_reasons: judgement.invalid,
    fail_reasons: judgement.failures,
    slo_results: judgement.slos,
    incomplete: interrupted || stuck || !summary,
    k6_stuck: stuck,
    tools: { k6: tools.k6Version, toxiproxy: tools.toxiproxyVersion, node: process.version },
    git_commit: gitCommit(),
    machine: { hostname: hostname(), cores: cpus().length, cpu: cpus()[0]?.model ?? '', memory_gib: +(totalmem() / 2 ** 30).toFixed(1), platform: process.platform },
    started_at: startedAt.toISOString(),
    ended_at: endedAt.toISOString(),
    processes,
    // Every parameter as the scenario resolved it (its defaults included): fleet, profile mix and profiles, timeline,
    // wake schedule, seed, SLOs. Null when k6 ended before its summary.
    resolved,
  };
  writeFileSync(join(dir, 'run.json'), JSON.stringify(run, null, 1));
  rmSync(join(dir, 'scenario.json'), { force: true });
  try {
    await renderReport(dir);
  } catch (e) {
    log(`wakestorm run: report not rendered: ${(e as Error).message}`);
  }
  renameSync(dir, finalDir);
  const latest = join(root, 'latest');
  const tmpLink = join(root, `.latest-${process.pid}`);
  rmSync(tmpLink, { force: true });
  symlinkSync(runId, tmpLink);
  renameSync(tmpLink, latest);
  log(['', ...verdictLines(judgement)].join('\n'));
  log(`wakestorm run ${name}: ${judgement.verdict.toUpperCase()}${run.incomplete ? ' (INCOMPLETE)' : ''}, exit ${judgement.exit_code}; report: ${join(finalDir, 'report.html')}`);
  return { code: judgement.exit_code, interrupted, stuck, dir: finalDir, runId, incomplete: run.incomplete, summary, slos, judgement };
}
