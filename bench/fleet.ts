// Fleet bench (`npm run bench:fleet`): the largest idle fleet one `wakestorm run` holds on this box past one process
// (k6 instances with their engines, server workers), and a reconnect storm of the whole fleet after a server restart.
// Writes results/bench-fleet-<stamp>/fleet.json and bench/FLEET.md, and the fleet section of BENCHMARKS.md.
//   FLEET_DEVICES=50000,40000 FLEET_INSTANCES=3 FLEET_WORKERS=3 FLEET_BALANCE=kernel npm run bench:fleet
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { EventsFile } from '../core/chaos-events.ts';
import { PROFILES } from '../core/profiles.ts';
import { DEFAULTS } from '../core/protocol.ts';
import { parseBalance, type Balance } from '../server/config.ts';
import { metricValue, type ProcStats } from '../scripts/proc-sampler.ts';
import { ROOT, resultsRoot } from '../scripts/run.ts';
import { gitCommit, readJson } from '../scripts/run-dir.ts';
import { sampledRun } from './scale.ts';

interface FleetRow {
  /** When this row was measured (rows of earlier runs stay until a run of the same shape replaces them). */
  date: string;
  /** The commit it was measured at (rows from before this field: the engine on gorilla sockets). */
  commit?: string;
  devices: number;
  instances: number;
  workers: number;
  /** How the server's workers got their connections (server/cluster.ts); rows without it: 'rr'. */
  balance?: Balance;
  holds: boolean;
  why_not: string[];
  verdict: string;
  /** Connects that failed after the server was back (refused or reset in the storm, then retried). */
  storm_failed_connects: number;
  connected_min: number | null;
  /** Before the restart: reconnect attempts (failed connects or drops), links the server opened, keepalives it got. */
  reconnect_attempts_before?: number;
  opened_before?: number | null;
  pings_before?: number | null;
  pings_owed?: number | null;
  /** Rows before 2026-12-05 judged keepalives over the whole run from the devices' side. */
  pings?: number;
  pings_expected?: [number, number];
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

const PROFILE = PROFILES.recommended!;

async function fleetStep(
  n: number,
  instances: number,
  workers: number,
  balance: Balance,
  root: string,
): Promise<FleetRow> {
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
      profile: PROFILE.name,
      wake: 'off',
      timeline,
      engine: 'native',
      instances,
      direct: true,
      server: { workers, balance, maxConnections: n * 2, drainMs: 1000 },
      vars: { RAMP: `${ramp}s` },
      resultsRoot: root,
      runId: `fleet-${n}-i${instances}-w${workers}-${balance}`,
    },
    (p) => ({ k6: p.k6Pids, engine: p.enginePids, server: p.serverPid }),
    // The server's counters in the quiet second half of the steady window, never in the storm.
    (since) => since > (ramp + settle / 2) * 1000 && since < (restartAt - 3) * 1000,
  );
  const m = r.summary?.metrics ?? {};
  const count = (x: string) => m[x]?.values.count ?? 0;
  const steadyFrom = fleetT0 + (ramp + 5) * 1000;
  const steadyTo = fleetT0 + (restartAt - 2) * 1000;
  const conns = sampler.connections(steadyFrom, steadyTo);
  const why: string[] = [];
  if (!conns || conns.min !== n)
    why.push(`server saw ${conns ? `${conns.min}-${conns.max}` : 'no'} connections in the steady window, not ${n}`);
  // The hold is judged up to the restart, by time: the run's `steady` phase also takes in a storm that outlasts the
  // recovery bound (core/phases.ts), so phase tags cannot tell the two apart. A device whose connect failed, or whose
  // link dropped, tries again: any reconnect attempt before the restart (counted per 250 ms) is a break in the hold.
  // The same buckets give the storm's busiest 250 ms.
  let attemptsBefore = 0;
  let peak = 0;
  for (const [name, mm] of Object.entries(m)) {
    const q = /^reconnect_attempts\{storm_q:(-?\d+)\}$/.exec(name);
    if (!q) continue;
    const n = mm.values.count ?? 0;
    if (Number(q[1]) < restartAt * 4) attemptsBefore += n;
    peak = Math.max(peak, n);
  }
  if (attemptsBefore) why.push(`${attemptsBefore} reconnect attempts before the restart (failed connects or drops)`);
  // The server's side, from its last /metrics scrape before the restart: every device's first link still the one
  // open (none lost and opened again), and the keepalives the ramp's schedule owes by then (within 5%): each
  // device's JSON ping (the profile's interval) and its answer to the server's every DEFAULTS.keepalive_ms.
  const onset = restartOnset(r.dir) ?? steadyTo;
  const snap = sampler.metricsBefore(onset);
  let opened: number | null = null;
  let pings: number | null = null;
  let pingsOwed: number | null = null;
  if (!snap) why.push('no server scrape before the restart');
  else {
    opened = metricValue(snap.text, 'voice_connections_opened_total');
    pings = metricValue(snap.text, 'voice_messages_total', 'direction="in",kind="text"');
    // Devices connect evenly over the ramp (index i at i/n of it).
    const since = snap.t - fleetT0;
    pingsOwed = 0;
    for (let i = 0; i < n; i++) {
      const up = Math.max(0, since - (i / n) * ramp * 1000);
      pingsOwed += Math.floor(up / PROFILE.keepalive.interval_ms) + Math.floor(up / DEFAULTS.keepalive_ms);
    }
    if (opened !== n) why.push(`the server opened ${opened} links before the restart, not ${n}`);
    if (!(Math.abs(pings - pingsOwed) <= pingsOwed * 0.05))
      why.push(`${pings} keepalives reached the server before the restart, expected ${pingsOwed} ±5%`);
  }
  const unplanned = count('unplanned_drops');
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
  const rt = m.reconnect_time?.values;
  const window = (name: string) => sampler.stats(name, steadyFrom, steadyTo);
  return {
    date: new Date().toISOString().slice(0, 10),
    commit: gitCommit(ROOT)?.slice(0, 7),
    devices: n,
    instances,
    workers,
    balance,
    holds: why.length === 0,
    why_not: why,
    verdict,
    storm_failed_connects: m['connect_success{chaos:recovery}']?.values.fails ?? 0,
    connected_min: conns?.min ?? null,
    reconnect_attempts_before: attemptsBefore,
    opened_before: opened,
    pings_before: pings,
    pings_owed: pingsOwed,
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

/** When the restart was applied (events.json of the run), or null. */
function restartOnset(dir: string): number | null {
  const applied = readJson<EventsFile>(join(dir, 'events.json'))?.applied;
  return applied?.find((e) => e.fault === 'server-restart' && e.phase === 'onset')?.t ?? null;
}

const cell = (p: ProcStats | null | undefined) => (p ? `${p.rss_avg_mib} MiB / ${p.cpu_avg_pct}%` : '-');

function fleetMd(rows: FleetRow[]): string {
  const held = rows.filter((r) => r.holds).map((r) => r.devices);
  const lines = [
    '<!-- fleet: written by `npm run bench:fleet` (bench/fleet.ts) from bench/fleet.json -->',
    `## Past one process: the largest idle fleet one run holds: ${held.length ? Math.max(...held) : 'none'} devices`,
    '',
    "One `wakestorm run` of `scenarios/reconnect-storm.ts`, idle devices of the `recommended` profile (keepalive every 15 s, wakes off) straight to the reference server (no Toxiproxy: at these sizes it would need 2 descriptors per device in several more processes on the same 2 cores), split over k6 instances (`--instances`, each with its device engine) and server workers (`--server-arg --workers=N`, and `--balance`: `rr`, the primary deals each connection to the next worker, or `kernel`, the workers accept from the shared socket themselves; server/cluster.ts). The fleet ramps up, holds for 30 s (the steady window the CPU and memory are averaged over), then the server restarts (stopped for 5 s; every device loses its link) and the fleet reconnects with its profile's backoff. *Holds*, judged up to the restart by time: the server counted every device through the steady window; no device tried to connect again (a failed connect or a drop is followed by an attempt; attempts are counted per 250 ms); the server's last scrape before the restart (2 s apart) had opened exactly one link per device and got the keepalives the ramp's schedule owes by then (within 5%). Rows before 2026-12-05 judged the hold by the run's `steady` phase, which also takes in a storm that outlasts the 60 s recovery bound (core/phases.ts), and keepalives over the whole run. The storm is measured apart: when /health counted (it may not answer in the storm: then the most it counted is given) the whole fleet back (1 s resolution, from the server listening again), reconnect times, the busiest 250 ms of reconnect attempts, connects refused or reset in the storm; the verdict of the run (last column) judges the whole run, the storm included. The rows of 2026-12-04 gave the storm 45 s before the run ended; the bench now gives it 90 s. Rows without a commit were measured with the engine's earlier sockets (gorilla/websocket, a goroutine per socket, one source address).",
    '',
    '| measured | devices | k6 instances | server workers | holds | k6 (all instances) RSS / CPU | engines RSS / CPU | server (all workers) RSS / CPU | all back after the restart | reconnect p50 / p95 / max | peak reconnects/s | connects failed in the storm | verdict of the run |',
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ...rows.map(
      (r) =>
        `| ${r.date}${r.commit ? ` (${r.commit})` : ''} | ${r.devices} | ${r.instances} | ${r.workers} (${r.balance ?? 'rr'}) | ${r.holds ? 'yes' : `no: ${r.why_not.join('; ')}`} | ${cell(r.processes.k6)} | ${cell(r.processes.engine)} | ${cell(r.processes.server)} | ${r.all_back_s !== null ? `${r.all_back_s} s` : r.back_max === undefined ? 'not all by the end' : `not all by the end (${r.back_max} of ${r.devices} at most)`} | ${[r.reconnect_p50_ms, r.reconnect_p95_ms, r.reconnect_max_ms].map((x) => (x === null ? '-' : Math.round(x))).join(' / ')} ms | ${r.peak_connects_per_s ?? '-'} | ${r.storm_failed_connects} | ${r.verdict} |`,
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
  const instances = Number(process.env.FLEET_INSTANCES ?? 3);
  const workers = Number(process.env.FLEET_WORKERS ?? 3);
  const balance = parseBalance(process.env.FLEET_BALANCE ?? 'kernel');
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const dir = join(resultsRoot(process.env.BENCH_RESULTS), `bench-fleet-${stamp}`);
  mkdirSync(dir, { recursive: true });
  const t0 = Date.now();
  const rows: FleetRow[] = [];
  for (const n of sizes) {
    console.log(`fleet: ${n} devices, ${instances} k6 instances, ${workers} server workers (${balance}) ...`);
    const row = await fleetStep(n, instances, workers, balance, dir);
    console.log(`  ${row.holds ? 'holds' : `does not hold: ${row.why_not.join('; ')}`}; all back ${row.all_back_s} s`);
    rows.push(row);
  }
  console.log(`bench:fleet took ${Math.round((Date.now() - t0) / 1000)} s`);
  writeFileSync(join(dir, 'fleet.json'), JSON.stringify(rows, null, 1));
  // bench/fleet.json keeps every shape measured: a run replaces the rows of its own shapes only.
  const key = (r: FleetRow) => `${r.devices}/${r.instances}/${r.workers}/${r.balance ?? 'rr'}`;
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
