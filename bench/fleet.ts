// Fleet bench (`npm run bench:fleet`): the largest idle fleet one `wakestorm run` holds on this box past one process
// (k6 instances with their engines, server workers), and a reconnect storm of the whole fleet after a server restart.
// Writes results/bench-fleet-<stamp>/fleet.json and bench/FLEET.md, and the fleet section of BENCHMARKS.md.
//   FLEET_DEVICES=50000,40000 FLEET_INSTANCES=4 FLEET_WORKERS=4 npm run bench:fleet
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type ProcStats } from '../scripts/proc-sampler.ts';
import { ROOT, resultsRoot } from '../scripts/run.ts';
import { gitCommit } from '../scripts/run-dir.ts';
import { sampledRun } from './scale.ts';

interface FleetRow {
  /** When this row was measured (rows of earlier runs stay until a run of the same shape replaces them). */
  date: string;
  /** The commit it was measured at (rows from before this field: the engine on gorilla sockets). */
  commit?: string;
  devices: number;
  instances: number;
  workers: number;
  holds: boolean;
  why_not: string[];
  verdict: string;
  /** Connects that failed after the server was back (refused or reset in the storm, then retried). */
  storm_failed_connects: number;
  connected_min: number | null;
  pings: number;
  pings_expected: [number, number];
  ramp_s: number;
  restart_at_s: number;
  /** Seconds from the restart's end (the server listening again) until /health counted every device back. */
  all_back_s: number | null;
  /** The most devices /health counted after the restart (the whole fleet when all came back). */
  back_max?: number;
  reconnect_p50_ms: number | null;
  reconnect_p95_ms: number | null;
  reconnect_max_ms: number | null;
  /** Reconnect attempts per second in the busiest 250 ms of the storm. */
  peak_connects_per_s: number | null;
  unplanned_drops: number;
  processes: Record<string, ProcStats | null>;
  run_dir?: string;
}

async function fleetStep(n: number, instances: number, workers: number, root: string): Promise<FleetRow> {
  const ramp = Math.min(90, Math.max(10, Math.ceil(n / 600)));
  const settle = 30;
  const restartAt = ramp + settle;
  const restartFor = 5;
  const duration = restartAt + restartFor + 90;
  const timeline = join(root, `restart-${n}.json`);
  writeFileSync(timeline, JSON.stringify([{ at: `${restartAt}s`, for: `${restartFor}s`, fault: 'server-restart' }]));
  const { r, sampler, fleetT0 } = await sampledRun(
    {
      scenario: 'reconnect-storm',
      devices: n,
      devicesPerVu: 500,
      duration: `${duration}s`,
      profile: 'recommended',
      wake: 'off',
      timeline,
      engine: 'native',
      instances,
      direct: true,
      server: { workers, maxConnections: n * 2, drainMs: 1000 },
      vars: { RAMP: `${ramp}s` },
      resultsRoot: root,
      runId: `fleet-${n}-i${instances}-w${workers}`,
    },
    (p) => ({ k6: p.k6Pids, engine: p.enginePids, server: p.serverPid }),
  );
  const m = r.summary?.metrics ?? {};
  const count = (x: string) => m[x]?.values.count ?? 0;
  const steadyFrom = fleetT0 + (ramp + 5) * 1000;
  const steadyTo = fleetT0 + (restartAt - 2) * 1000;
  const conns = sampler.connections(steadyFrom, steadyTo);
  const why: string[] = [];
  if (!conns || conns.min !== n)
    why.push(`server saw ${conns ? `${conns.min}-${conns.max}` : 'no'} connections in the steady window, not ${n}`);
  // Connects before the restart must all succeed; those refused while it is down, or in its storm, are measured.
  const cs = m['connect_success{chaos:steady}']?.values;
  if (!cs || cs.fails) why.push(`${cs?.fails ?? '?'} failed connects before the restart`);
  const unplanned = count('unplanned_drops');
  if (unplanned) why.push(`${unplanned} unplanned drops`);
  // recommended pings every 15 s once connected: a device connected at t sends floor((D - t) / 15), less the restart.
  const pings: [number, number] = [
    Math.floor(n * Math.floor((duration - ramp - restartFor - 15) / 15) * 0.95),
    n * Math.ceil(duration / 15),
  ];
  if (count('ping_rtt') < pings[0] || count('ping_rtt') > pings[1])
    why.push(`${count('ping_rtt')} pings answered, expected ${pings[0]}-${pings[1]}`);
  // The run's own verdict covers the storm too: a tester saturated by it is said there, apart from the hold.
  const verdict =
    r.judgement.verdict === 'pass'
      ? 'PASS'
      : `${r.judgement.verdict.toUpperCase()}: ${[...r.judgement.invalid, ...r.judgement.failures].join('; ')}`;
  // The storm: after the server is back, when /health first counts the whole fleet again.
  const back = sampler
    .connectionSeries()
    .find((h) => h.t > fleetT0 + (restartAt + restartFor) * 1000 && h.connections >= n);
  const allBack = back ? +((back.t - (fleetT0 + (restartAt + restartFor) * 1000)) / 1000).toFixed(1) : null;
  // Not all back by the end: how many were, at most (the storm is measured, not part of the hold).
  const backMax = Math.max(
    0,
    ...sampler
      .connectionSeries()
      .filter((h) => h.t > fleetT0 + (restartAt + restartFor) * 1000)
      .map((h) => h.connections),
  );
  let peak = 0;
  for (const [name, mm] of Object.entries(m))
    if (/^reconnect_attempts\{storm_q:/.test(name)) peak = Math.max(peak, mm.values.count ?? 0);
  const rt = m.reconnect_time?.values;
  const window = (name: string) => sampler.stats(name, steadyFrom, steadyTo);
  return {
    date: new Date().toISOString().slice(0, 10),
    commit: gitCommit(ROOT)?.slice(0, 7),
    devices: n,
    instances,
    workers,
    holds: why.length === 0,
    why_not: why,
    verdict,
    storm_failed_connects: m['connect_success{chaos:recovery}']?.values.fails ?? 0,
    connected_min: conns?.min ?? null,
    pings: count('ping_rtt'),
    pings_expected: pings,
    ramp_s: ramp,
    restart_at_s: restartAt,
    all_back_s: allBack,
    back_max: backMax,
    reconnect_p50_ms: rt?.['p(50)'] ?? null,
    reconnect_p95_ms: rt?.['p(95)'] ?? null,
    reconnect_max_ms: rt?.max ?? null,
    peak_connects_per_s: peak ? peak * 4 : null,
    unplanned_drops: unplanned,
    processes: { k6: window('k6'), engine: window('engine'), server: window('server') },
    run_dir: r.dir,
  };
}

const cell = (p: ProcStats | null | undefined) => (p ? `${p.rss_avg_mib} MiB / ${p.cpu_avg_pct}%` : '-');

function fleetMd(rows: FleetRow[]): string {
  const held = rows.filter((r) => r.holds).map((r) => r.devices);
  const lines = [
    '<!-- fleet: written by `npm run bench:fleet` (bench/fleet.ts) from bench/fleet.json -->',
    `## Past one process: the largest idle fleet one run holds: ${held.length ? Math.max(...held) : 'none'} devices`,
    '',
    "One `wakestorm run` of `scenarios/reconnect-storm.ts`, idle devices of the `recommended` profile (keepalive every 15 s, wakes off) straight to the reference server (no Toxiproxy: at these sizes it would need 2 descriptors per device in several more processes on the same 2 cores), split over k6 instances (`--instances`, each with its device engine) and server workers (`--server-arg --workers=N`). The fleet ramps up, holds for 30 s (the steady window the CPU and memory are averaged over), then the server restarts (stopped for 5 s; every device loses its link) and the fleet reconnects with its profile's backoff. *Holds*: the server counted every device through the steady window, no connect failed before the restart, no unplanned drop, keepalives answered at cadence (within 5%). The storm is measured apart: when /health counted the whole fleet back (1 s resolution, from the server listening again), reconnect times, the busiest 250 ms of reconnect attempts, connects refused or reset in the storm; the verdict of the run (last column) judges the whole run, the storm included. The rows of 2026-12-04 gave the storm 45 s before the run ended; the bench now gives it 90 s. Rows without a commit were measured with the engine's earlier sockets (gorilla/websocket, a goroutine per socket, one source address).",
    '',
    '| measured | devices | k6 instances | server workers | holds | k6 (all instances) RSS / CPU | engines RSS / CPU | server (all workers) RSS / CPU | all back after the restart | reconnect p50 / p95 / max | peak reconnects/s | connects failed in the storm | verdict of the run |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...rows.map(
      (r) =>
        `| ${r.date}${r.commit ? ` (${r.commit})` : ''} | ${r.devices} | ${r.instances} | ${r.workers} | ${r.holds ? 'yes' : `no: ${r.why_not.join('; ')}`} | ${cell(r.processes.k6)} | ${cell(r.processes.engine)} | ${cell(r.processes.server)} | ${r.all_back_s !== null ? `${r.all_back_s} s` : r.back_max === undefined ? 'not all by the end' : `not all by the end (${r.back_max} of ${r.devices} at most)`} | ${[r.reconnect_p50_ms, r.reconnect_p95_ms, r.reconnect_max_ms].map((x) => (x === null ? '-' : Math.round(x))).join(' / ')} ms | ${r.peak_connects_per_s ?? '-'} | ${r.storm_failed_connects} | ${r.verdict} |`,
    ),
    '<!-- /fleet -->',
    '',
  ];
  return lines.join('\n');
}

/** bench/FLEET.md and BENCHMARKS.md's fleet section from every row in bench/fleet.json. */
function publish(all: FleetRow[]): string {
  const md = fleetMd(all);
  writeFileSync(join(import.meta.dirname, 'FLEET.md'), md);
  // BENCHMARKS.md carries the fleet section between its markers (bench/index.ts appends bench/FLEET.md too).
  const path = join(ROOT, 'BENCHMARKS.md');
  const bm = readFileSync(path, 'utf8');
  const re = /<!-- fleet:[\s\S]*?<!-- \/fleet -->\n?/;
  writeFileSync(path, re.test(bm) ? bm.replace(re, md) : `${bm.trimEnd()}\n\n${md}`);
  return md;
}

async function main() {
  const keep = join(import.meta.dirname, 'fleet.json');
  const kept = existsSync(keep) ? (JSON.parse(readFileSync(keep, 'utf8')) as FleetRow[]) : [];
  // FLEET_RENDER=1: only rewrite FLEET.md and BENCHMARKS.md from bench/fleet.json.
  if (process.env.FLEET_RENDER) {
    publish(kept);
    return;
  }
  const sizes = (process.env.FLEET_DEVICES ?? '50000').split(',').map(Number);
  const instances = Number(process.env.FLEET_INSTANCES ?? 4);
  const workers = Number(process.env.FLEET_WORKERS ?? 4);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const dir = join(resultsRoot(process.env.BENCH_RESULTS), `bench-fleet-${stamp}`);
  mkdirSync(dir, { recursive: true });
  const t0 = Date.now();
  const rows: FleetRow[] = [];
  for (const n of sizes) {
    console.log(`fleet: ${n} devices, ${instances} k6 instances, ${workers} server workers ...`);
    const row = await fleetStep(n, instances, workers, dir);
    console.log(`  ${row.holds ? 'holds' : `does not hold: ${row.why_not.join('; ')}`}; all back ${row.all_back_s} s`);
    rows.push(row);
  }
  console.log(`bench:fleet took ${Math.round((Date.now() - t0) / 1000)} s`);
  writeFileSync(join(dir, 'fleet.json'), JSON.stringify(rows, null, 1));
  // bench/fleet.json keeps every shape measured: a run replaces the rows of its own shapes only.
  const key = (r: FleetRow) => `${r.devices}/${r.instances}/${r.workers}`;
  const all = [...kept.filter((o) => !rows.some((r) => key(r) === key(o))), ...rows].sort(
    (a, b) => b.devices - a.devices || b.instances - a.instances,
  );
  writeFileSync(
    keep,
    `${JSON.stringify(
      all.map((r) => ({ ...r, run_dir: undefined })),
      null,
      1,
    )}\n`,
  );
  const md = publish(all);
  console.log(`\n${md}\nwritten: ${join(dir, 'fleet.json')}, bench/fleet.json, bench/FLEET.md and BENCHMARKS.md`);
}

main().catch((e) => {
  console.error(`bench:fleet failed: ${(e as Error).message}`);
  process.exit(1);
});
