// `wakestorm capacity`: the largest device count the target holds within every SLO. Steps up (doubling), then bisects;
// each step is a bounded `wakestorm run`. Checks that the load generator, not the server, is what held.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { SingleBar } from 'cli-progress';
import type { Slo } from '../core/slo.ts';
import { judgeSlo, VERDICT_EXIT } from '../core/verdict.ts';
import type { ServerConfig } from '../server/config.ts';
import type { DeviceEngine } from './engine.ts';
import { Sampler } from './proc-sampler.ts';
import { parseDuration } from '../core/run-config.ts';
import { renderCapacityChart, type CapacityPoint } from './charts.ts';
import { RunError, planRun, resultsRoot, runScenario, type RunResult } from './run.ts';
import { loadRun } from './report.ts';
import { runIdFor } from './run-dir.ts';

export interface CapacityOptions {
  scenario?: string;
  profile?: string;
  slo?: string[];
  maxDevices: number;
  startDevices?: number;
  stepDuration?: string;
  wake?: string;
  /** Stop bisecting when the bracket is within this fraction of the lower bound. */
  resolution?: number;
  devicesPerVu?: number;
  /** The fleet flags a run takes (the same meaning on run, capacity and try). */
  dialect?: string;
  timeline?: string;
  backoff?: string;
  seed?: string;
  token?: string;
  tokenFile?: string;
  server?: Partial<ServerConfig>;
  serverUrl?: string;
  /** A wss:// server's CA, or no verification (RunOptions). */
  ca?: string;
  insecureTls?: boolean;
  /** Where the dialect's HTTP call before the socket goes (run's --provision-url). */
  provisionUrl?: string;
  /** Through Toxiproxy (default: direct, so the proxy's CPU is not part of what is measured). */
  throughProxy?: boolean;
  /** Where the devices run: the native engine (default) or k6. */
  engine?: DeviceEngine;
  /** k6 processes per step (execution segments), merged into one result. */
  instances?: number;
  resultsRoot?: string;
  log?: (line: string) => void;
}

interface Step extends CapacityPoint {
  run_id: string;
  exit_code: number;
  failed_slos: string[];
  k6_cpu_pct: number | null;
  generator_saturated: boolean;
  devices_started: number;
  seconds: number;
}

/** The SLOs every capacity step must meet, on top of the run's: devices actually get connected. */
const CAPACITY_EXTRA_SLOS: Slo[] = [
  {
    name: 'connect_success',
    metric: 'connect_success',
    aggregation: 'rate',
    op: '>',
    target: 0.99,
    description: 'connection attempts that reached connected',
  },
];

function p95(r: RunResult, m: string): number | null {
  const v = r.summary?.metrics[m]?.values;
  return v && v.count ? v['p(95)']! : null;
}

/** What every step of one search shares. */
interface SearchContext {
  opts: CapacityOptions;
  scenario: string;
  stepDuration: string;
  wake: string;
  slo: string[];
  dir: string;
  cores: number;
  steps: Step[];
  log: (line: string) => void;
}

/** One bounded `wakestorm run` at n devices, judged, with k6's own CPU to tell a saturated generator from the server. */
async function capacityStep(c: SearchContext, n: number, why: string): Promise<Step> {
  const { opts, steps, log } = c;
  const t0 = Date.now();
  const tty = process.stdout.isTTY;
  const bar = tty
    ? new SingleBar({
        format: `  step ${steps.length + 1}: ${n} devices (${why}) [{bar}] {value}/{total} s`,
        hideCursor: true,
      })
    : null;
  const total = Math.ceil(parseDuration(c.stepDuration, '--step-duration') / 1000) + 5;
  bar?.start(total, 0);
  const tick = bar ? setInterval(() => bar.update(Math.min(total, Math.round((Date.now() - t0) / 1000))), 500) : null;
  if (!tty) log(`  step ${steps.length + 1}: ${n} devices (${why}) ...`);
  let r: RunResult;
  // k6's own CPU, after its start-up, is how the search tells a saturated generator from a saturated server.
  const sampler = new Sampler();
  let k6From = 0;
  try {
    r = await runScenario({
      scenario: c.scenario,
      devices: n,
      devicesPerVu: opts.devicesPerVu,
      duration: c.stepDuration,
      profile: opts.profile,
      wake: c.wake,
      dialect: opts.dialect,
      timeline: opts.timeline,
      backoff: opts.backoff,
      seed: opts.seed,
      token: opts.token,
      tokenFile: opts.tokenFile,
      slo: c.slo,
      server: opts.server,
      serverUrl: opts.serverUrl,
      ca: opts.ca,
      insecureTls: opts.insecureTls,
      provisionUrl: opts.provisionUrl,
      // A timeline needs Toxiproxy in the path.
      direct: !opts.throughProxy && !opts.timeline,
      engine: opts.engine,
      instances: opts.instances,
      resultsRoot: join(c.dir, 'steps'),
      runId: `${String(steps.length + 1).padStart(2, '0')}-${n}`,
      echo: false,
      dashboard: false,
      charts: false,
      onStarted: (p) => {
        k6From = p.startedAt + 2000;
        sampler.start({ k6: p.k6Pids });
      },
      log: () => {},
    });
  } finally {
    sampler.stop();
    if (tick) clearInterval(tick);
    bar?.stop();
  }
  if (r.interrupted) throw new RunError(`capacity search interrupted during the step with ${n} devices (${r.dir})`);
  if (
    r.code !== VERDICT_EXIT.pass &&
    r.code !== VERDICT_EXIT.fail &&
    !(r.judgement.verdict === 'invalid' && r.summary)
  ) {
    throw new RunError(
      `capacity step with ${n} devices could not be judged: ${r.judgement.invalid.join('; ') || `exit ${r.code}`} (see ${r.dir})`,
    );
  }
  const rows = r.judgement.slos;
  const started = r.summary?.metrics.devices_started?.values.count ?? 0;
  const k6Cpu = sampler.stats('k6', k6From, Date.now())?.cpu_avg_pct ?? null;
  // The generator is the bottleneck when k6 used (nearly) every core, or could not even start its devices.
  const saturated =
    r.judgement.verdict === 'invalid' ||
    (k6Cpu !== null && k6Cpu >= 85 * c.cores) ||
    started < n ||
    (r.summary?.metrics.dropped_iterations?.values.count ?? 0) > 0;
  const step: Step = {
    devices: n,
    pass: r.code === 0,
    wake_ack_p95: p95(r, 'wake_ack_latency'),
    response_p95: p95(r, 'response_latency'),
    drop_rate: r.summary?.metrics.session_drop_rate?.values.rate ?? null,
    run_id: r.runId,
    exit_code: r.code,
    failed_slos: rows.filter((x) => x.status === 'fail').map((x) => `${x.name} (${x.measured}, target ${x.target})`),
    k6_cpu_pct: k6Cpu === null ? null : +k6Cpu.toFixed(1),
    generator_saturated: saturated,
    devices_started: started,
    seconds: Math.round((Date.now() - t0) / 1000),
  };
  steps.push(step);
  log(
    `  step ${steps.length}: ${n} devices: ${step.pass ? 'PASS' : 'FAIL'}  wake_ack p95 ${step.wake_ack_p95?.toFixed(0) ?? '-'} ms, response p95 ${step.response_p95?.toFixed(0) ?? '-'} ms, drops ${((step.drop_rate ?? 0) * 100).toFixed(1)}%, k6 CPU ${step.k6_cpu_pct ?? '-'}%` +
      `${step.failed_slos.length ? `  broke: ${step.failed_slos.join('; ')}` : ''}${saturated ? '  [LOAD GENERATOR SATURATED]' : ''}`,
  );
  return step;
}

/** The bracket: double from `start` until a step fails (or max), then bisect until hi - lo is within resolution of lo. */
async function bracket(
  step: (n: number, why: string) => Promise<Step>,
  start: number,
  max: number,
  resolution: number,
): Promise<{ lo: number; hi: number | null; firstFail: Step | null }> {
  let lo = 0;
  let hi: number | null = null;
  let firstFail: Step | null = null;
  for (let n = start; ; n = Math.min(max, n * 2)) {
    const s = await step(n, 'step up');
    if (s.pass) lo = n;
    else {
      hi = n;
      firstFail = s;
      break;
    }
    if (n >= max) break;
  }
  while (hi !== null && hi - lo > Math.max(1, Math.ceil(lo * resolution))) {
    const mid = Math.round((lo + hi) / 2);
    const s = await step(mid, 'bisect');
    if (s.pass) lo = mid;
    else {
      hi = mid;
      firstFail = s;
    }
  }
  return { lo, hi, firstFail };
}

/** One more step at holds × 0.8, and the latency SLO nearest its target there (the headroom a fleet of that size has). */
async function headroomAt(
  c: SearchContext,
  holds: number,
): Promise<{ devices: number; pct: number | null; limiting: string | null }> {
  const n = Math.round(holds * 0.8);
  const s = await capacityStep(c, n, 'headroom at N x 0.8');
  const r = loadRun(join(c.dir, 'steps', s.run_id));
  let best: { pct: number; name: string } | null = null;
  for (const sloDef of r.run.slos) {
    const row = judgeSlo(r.summary, sloDef);
    if (row.value === null || !sloDef.op.startsWith('<') || sloDef.target === 0) continue;
    const pct = ((sloDef.target - row.value) / sloDef.target) * 100;
    if (!best || pct < best.pct) best = { pct, name: row.name };
  }
  return { devices: n, pct: best ? +best.pct.toFixed(1) : null, limiting: best?.name ?? null };
}

export async function capacitySearch(opts: CapacityOptions): Promise<{ holds: number | null; file: string }> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const scenario = opts.scenario ?? 'wake-latency';
  const stepDuration = opts.stepDuration ?? '30s';
  const wake = opts.wake ?? 'poisson:10s';
  const resolution = opts.resolution ?? 0.1;
  const start = opts.startDevices ?? Math.min(100, opts.maxDevices);
  const cores = cpus().length;
  const dir = join(resultsRoot(opts.resultsRoot), runIdFor('capacity', new Date()));
  mkdirSync(dir, { recursive: true });
  const sloFile = join(dir, 'capacity-slos.json');
  writeFileSync(sloFile, JSON.stringify(CAPACITY_EXTRA_SLOS));
  const slo = [...(opts.slo ?? []), sloFile];
  // Every flag is checked once, before the first step sends anything.
  planRun({
    scenario,
    profile: opts.profile,
    slo,
    duration: stepDuration,
    wake,
    devices: start,
    dialect: opts.dialect,
    timeline: opts.timeline,
    backoff: opts.backoff,
    seed: opts.seed,
  });
  const c: SearchContext = { opts, scenario, stepDuration, wake, slo, dir, cores, steps: [], log };

  log(
    `wakestorm capacity: ${scenario}, steps of ${stepDuration}, from ${start} up to ${opts.maxDevices} devices, bisect to ${resolution * 100}%`,
  );
  const { lo, hi, firstFail } = await bracket((n, why) => capacityStep(c, n, why), start, opts.maxDevices, resolution);
  const holds = lo > 0 ? lo : null;
  const headroom = holds && holds >= 5 ? await headroomAt(c, holds) : null;
  const generatorLimited = firstFail?.generator_saturated ?? false;
  const answer =
    holds === null
      ? `holds no tested fleet: ${start} devices already broke ${firstFail?.failed_slos.join('; ')}`
      : `holds ${holds} devices${headroom?.pct !== null && headroom ? ` (with ${headroom.pct}% headroom at ${headroom.devices}, N×0.8, on ${headroom.limiting})` : ''}` +
        (hi === null
          ? `; never broke up to --max-devices ${opts.maxDevices}`
          : `; first broke at ${hi}: ${firstFail!.failed_slos.join('; ')}`);
  const result = {
    scenario,
    step_duration: stepDuration,
    wake,
    profile: opts.profile ?? null,
    max_devices: opts.maxDevices,
    holds,
    first_fail: hi,
    first_broken_slos: firstFail?.failed_slos ?? [],
    headroom,
    generator_limited: generatorLimited,
    answer: generatorLimited
      ? `INCONCLUSIVE: the load generator saturated before the server (k6 CPU ${firstFail?.k6_cpu_pct}% of ${cores * 100}%); ${answer}`
      : answer,
    steps: c.steps,
    machine: { cores },
  };
  const file = join(dir, 'capacity.json');
  writeFileSync(file, JSON.stringify(result, null, 1));
  try {
    await renderCapacityChart(c.steps, holds, join(dir, 'capacity.svg'));
  } catch (e) {
    log(`capacity chart not rendered: ${(e as Error).message}`);
  }
  log(`\n${result.answer}`);
  log(`capacity.json and capacity.svg in ${dir}`);
  return { holds, file };
}
