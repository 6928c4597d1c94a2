// `npm run bench:scenarios`: every shipped scenario as a user runs it, at its own defaults (devices, duration, profile
// mix, wake rate, timeline; soak shortened from its 1 h), and wake-latency at 10,000 devices at its own wake rate
// (a wake every 20 s on average): where the shipped scenarios hold on this box, with every process of the tester
// counted (k6, the engine, Toxiproxy, and the CLI itself: this process runs it). Then each scenario's limit: the
// largest fleet it holds on this box at its own wake rate and profile mix, and the busiest process where it breaks.
// Writes results/bench-scenarios-<ts>/scenarios.json and those two sections of BENCHMARKS.md.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, resultsRoot, runScenario, type RunOptions } from '../scripts/run.ts';
import type { RunRecord } from '../core/run-contract.ts';

interface Case {
  label: string;
  opts: Pick<RunOptions, 'scenario' | 'devices' | 'duration'>;
}

const CASES: Case[] = [
  { label: 'smoke', opts: { scenario: 'smoke' } },
  { label: 'wake-latency', opts: { scenario: 'wake-latency' } },
  { label: 'flaky-network', opts: { scenario: 'flaky-network' } },
  { label: 'reconnect-storm', opts: { scenario: 'reconnect-storm' } },
  { label: 'capacity (the scenario, one step)', opts: { scenario: 'capacity' } },
  { label: 'soak (3 min of its 1 h)', opts: { scenario: 'soak', duration: '3m' } },
  { label: 'wake-latency at 10,000 devices', opts: { scenario: 'wake-latency', devices: 10_000, duration: '90s' } },
];

export interface ScenarioRow {
  label: string;
  devices: number;
  duration_s: number;
  verdict: string;
  why: string;
  /** Every tester process: k6, the engine, Toxiproxy (MiB, RSS average) and the CLI (this process, max). */
  rss_mib: { k6: number; engine: number; toxiproxy: number; cli: number; total: number };
  cpu_pct: { k6: number; engine: number; toxiproxy: number; cli: number; total: number };
  server: { rss_mib: number; cpu_pct: number } | null;
  vu_lag_p99_ms: number | null;
}

const r1 = (n: number) => Math.round(n * 10) / 10;

/** The CLI's own footprint while a run goes on: RSS max and CPU average, sampled every second. */
function sampleSelf(): () => { rss: number; cpu: number } {
  const start = process.cpuUsage();
  const t0 = Date.now();
  let rss = process.memoryUsage().rss;
  const timer = setInterval(() => (rss = Math.max(rss, process.memoryUsage().rss)), 1000);
  return () => {
    clearInterval(timer);
    const u = process.cpuUsage(start);
    return { rss: rss / 2 ** 20, cpu: ((u.user + u.system) / 1000 / Math.max(1, Date.now() - t0)) * 100 };
  };
}

/** One bounded run of a scenario as a user runs it, every tester process counted. */
async function measureRun(label: string, opts: Case['opts']): Promise<ScenarioRow> {
  const self = sampleSelf();
  const r = await runScenario({ ...opts, echo: false, dashboard: false, charts: false, progress: 'off' });
  const cli = self();
  const run = JSON.parse(readFileSync(join(r.dir, 'run.json'), 'utf8')) as RunRecord & {
    resolved?: { devices: number; duration_ms: number };
  };
  const p = run.processes;
  // One field of every tester process, the CLI's own (this process) beside them, and their total.
  const perProcess = (f: 'rss_avg_mib' | 'cpu_avg_pct', cliValue: number) => {
    const of = (k: string) => p[k]?.[f] ?? 0;
    const [k6, engine, toxiproxy] = [of('k6'), of('engine'), of('toxiproxy')];
    return {
      k6: r1(k6),
      engine: r1(engine),
      toxiproxy: r1(toxiproxy),
      cli: r1(cliValue),
      total: r1(k6 + engine + toxiproxy + cliValue),
    };
  };
  const lag = r.summary?.metrics.vu_loop_lag?.values['p(99)'] ?? null;
  return {
    label,
    devices: run.resolved?.devices ?? opts.devices ?? 0,
    duration_s: (run.resolved?.duration_ms ?? 0) / 1000,
    verdict: r.judgement.verdict,
    why: [...r.judgement.invalid, ...r.judgement.failures].join('; ').slice(0, 300),
    rss_mib: perProcess('rss_avg_mib', cli.rss),
    cpu_pct: perProcess('cpu_avg_pct', cli.cpu),
    server: p.server ? { rss_mib: r1(p.server.rss_avg_mib), cpu_pct: r1(p.server.cpu_avg_pct) } : null,
    vu_lag_p99_ms: lag === null ? null : r1(lag),
  };
}

export async function scenariosBench(log: (l: string) => void = console.log): Promise<ScenarioRow[]> {
  const rows: ScenarioRow[] = [];
  for (const c of CASES) {
    log(`bench:scenarios: ${c.label}`);
    rows.push(await measureRun(c.label, c.opts));
  }
  return rows;
}

/**
 * The fleets the limit search tries past each scenario's own size, smallest first: it stops at the first that does
 * not PASS. 10,000 is the most one run takes on this box through Toxiproxy within the 20,000 open files a process may
 * hold (Toxiproxy holds two sockets per device).
 */
const LADDER = [1000, 2500, 5000, 10_000];

/** Each scenario's limit search: its own profile mix, wake rate and timeline; long runs shortened to 60-90 s. */
const LIMIT_CASES: Case[] = [
  { label: 'smoke', opts: { scenario: 'smoke' } },
  { label: 'wake-latency', opts: { scenario: 'wake-latency' } },
  { label: 'flaky-network', opts: { scenario: 'flaky-network' } },
  { label: 'reconnect-storm', opts: { scenario: 'reconnect-storm' } },
  { label: 'capacity (one step, 60 s)', opts: { scenario: 'capacity', duration: '60s' } },
  { label: 'soak (90 s)', opts: { scenario: 'soak', duration: '90s' } },
];

export interface LimitRow {
  label: string;
  /** The largest fleet tried that PASSed (its row), or null when even the scenario's own size did not. */
  holds: ScenarioRow | null;
  /** The first fleet that did not PASS (its row), or null when the ladder's top held. */
  breaks: ScenarioRow | null;
  /** Where the breaking run spent its CPU: the busiest process of all (tester's and server's), from /proc. */
  busiest: string | null;
}

/** Which process was busiest in a run: the one that saturates first on these 2 cores. */
function busiest(r: ScenarioRow): string {
  const all: [string, number][] = [
    ['k6', r.cpu_pct.k6],
    ['engine', r.cpu_pct.engine],
    ['Toxiproxy', r.cpu_pct.toxiproxy],
    ['CLI', r.cpu_pct.cli],
    ['server', r.server?.cpu_pct ?? 0],
  ];
  const [name, pct] = all.sort((a, b) => b[1] - a[1])[0]!;
  return `${name} (${pct}% of a core)`;
}

/** The largest fleet each shipped scenario holds on this box at its own wake rate and profile mix, and what breaks. */
export async function limitsBench(log: (l: string) => void = console.log): Promise<LimitRow[]> {
  const rows: LimitRow[] = [];
  for (const c of LIMIT_CASES) {
    let holds: ScenarioRow | null = null;
    let breaks: ScenarioRow | null = null;
    for (const devices of [undefined, ...LADDER]) {
      if (devices !== undefined && holds && devices <= holds.devices) continue;
      log(`bench:scenarios: ${c.label} at ${devices ?? 'its own'} devices`);
      const row = await measureRun(c.label, { ...c.opts, ...(devices === undefined ? {} : { devices }) });
      log(`  ${row.verdict}${row.why ? `: ${row.why}` : ''}`);
      if (row.verdict !== 'pass') {
        breaks = row;
        break;
      }
      holds = row;
    }
    rows.push({ label: c.label, holds, breaks, busiest: breaks ? busiest(breaks) : null });
  }
  return rows;
}

export function limitsSection(rows: LimitRow[]): string {
  const head =
    '| scenario | holds (PASS) | tester RSS / CPU there | does not hold | its verdict | busiest process there |';
  const lines = rows.map(
    (r) =>
      `| ${r.label} | ${r.holds ? `${r.holds.devices} devices` : 'not at its own size'} | ${r.holds ? `${r.holds.rss_mib.total} MiB / ${r.holds.cpu_pct.total}%` : '-'} | ${r.breaks ? `${r.breaks.devices} devices` : `- (the ladder's top, ${LADDER.at(-1)}, held)`} | ${r.breaks ? `${r.breaks.verdict.toUpperCase()}: ${r.breaks.why}` : '-'} | ${r.busiest ?? '-'} |`,
  );
  return tableSection(
    [LIMITS_START, LIMITS_END],
    'The largest fleet each shipped scenario holds',
    `Produced by \`npm run bench:scenarios\` on this machine, ${new Date().toISOString().slice(0, 10)}: each shipped scenario as \`npx wakestorm run <scenario> --devices N\` runs it (its own profile mix, wake rate and timeline; the native engine, through Toxiproxy; capacity and soak shortened), at its own size and then at ${LADDER.join(', ')} devices, stopping at the first run that does not PASS. "Busiest process" is the one with the most CPU in that run (/proc averages; on 2 cores the one that saturates first); the verdict says which bound broke.`,
    head,
    lines,
  );
}

/** A BENCHMARKS.md section between its markers: a title, what produced it, a table. */
function tableSection([start, end]: [string, string], title: string, intro: string, head: string, lines: string[]) {
  const rule = `|${' --- |'.repeat(head.split('|').length - 2)}`;
  return [start, `## ${title}`, '', intro, '', head, rule, ...lines, end].join('\n');
}

const LIMITS_START = '<!-- bench:limits -->';
const LIMITS_END = '<!-- /bench:limits -->';

/** The limits section the last `npm run bench:scenarios` wrote, from BENCHMARKS.md's text, or null. */
export function limitsSectionIn(text: string): string | null {
  return sectionIn(text, LIMITS_START, LIMITS_END);
}

/** BENCHMARKS.md with its limits section replaced (or appended). */
export function withLimitsSection(text: string, section: string): string {
  return withSection(text, LIMITS_START, LIMITS_END, section);
}

export function scenariosSection(rows: ScenarioRow[]): string {
  const head =
    '| scenario | devices | duration | verdict | tester RSS MiB: total (k6 + engine + Toxiproxy + CLI) | tester CPU %: total (k6 + engine + Toxiproxy + CLI) | server RSS / CPU | VU lag p99 |';
  const lines = rows.map(
    (r) =>
      `| ${r.label} | ${r.devices} | ${r.duration_s} s | ${r.verdict.toUpperCase()}${r.why ? `: ${r.why}` : ''} | ${r.rss_mib.total} (${r.rss_mib.k6} + ${r.rss_mib.engine} + ${r.rss_mib.toxiproxy} + ${r.rss_mib.cli}) | ${r.cpu_pct.total} (${r.cpu_pct.k6} + ${r.cpu_pct.engine} + ${r.cpu_pct.toxiproxy} + ${r.cpu_pct.cli}) | ${r.server ? `${r.server.rss_mib} MiB / ${r.server.cpu_pct}%` : '-'} | ${r.vu_lag_p99_ms ?? '-'} ms |`,
  );
  return tableSection(
    [SECTION_START, SECTION_END],
    'Shipped scenarios at their own defaults',
    `Produced by \`npm run bench:scenarios\` on this machine, ${new Date().toISOString().slice(0, 10)}: each shipped scenario as \`npx wakestorm run <scenario>\` runs it (its devices, duration, profile mix, wake rate and timeline; the native engine; soak shortened to 3 min), then wake-latency at 10,000 devices at its own wake rate. Every tester process is counted: k6, the device engine, Toxiproxy (averages over the run, from /proc) and the CLI (its RSS max and CPU average; the bench runs it in-process). The verdict is the run's own (a FAIL or INVALID says why).`,
    head,
    lines,
  );
}

const SECTION_START = '<!-- bench:scenarios -->';
const SECTION_END = '<!-- /bench:scenarios -->';

/** A text with the section between start and end replaced by `section` (or appended): the rest as it was. */
export function withSection(text: string, start: string, end: string, section: string): string {
  const old = sectionIn(text, start, end);
  if (old === null) return `${text.trimEnd()}\n\n${section}\n`;
  const a = text.indexOf(start);
  return `${text.slice(0, a)}${section}${text.slice(a + old.length)}`;
}

/** The section between start and end (both markers kept) in a text, or null. */
export function sectionIn(text: string, start: string, end: string): string | null {
  const a = text.indexOf(start);
  const b = text.indexOf(end);
  return a >= 0 && b > a ? text.slice(a, b + end.length) : null;
}

/** The scenarios section the last `npm run bench:scenarios` wrote, from BENCHMARKS.md's text, or null. */
export function scenariosSectionIn(text: string): string | null {
  return sectionIn(text, SECTION_START, SECTION_END);
}

/** BENCHMARKS.md with its scenarios section replaced (or appended): the rest of the file as the last bench wrote it. */
export function withScenariosSection(text: string, section: string): string {
  return withSection(text, SECTION_START, SECTION_END, section);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  // BENCH_ONLY=limits: the limit search alone; =defaults: the scenarios at their defaults alone.
  const only = process.env.BENCH_ONLY;
  const rows = only === 'limits' ? null : await scenariosBench();
  const limits = only === 'defaults' ? null : await limitsBench();
  const dir = join(resultsRoot(), `bench-scenarios-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'scenarios.json'), `${JSON.stringify({ defaults: rows, limits }, null, 2)}\n`);
  const md = join(ROOT, 'BENCHMARKS.md');
  let text = readFileSync(md, 'utf8');
  if (rows) text = withScenariosSection(text, scenariosSection(rows));
  if (limits) text = withLimitsSection(text, limitsSection(limits));
  writeFileSync(md, text);
  const sections = [rows && scenariosSection(rows), limits && limitsSection(limits)].filter((x) => x !== null);
  writeFileSync(join(dir, 'scenarios.md'), `${sections.join('\n\n')}\n`);
  console.log(sections.join('\n\n'));
}
