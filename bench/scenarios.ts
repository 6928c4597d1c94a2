// `npm run bench:scenarios`: every shipped scenario as a user runs it, at its own defaults (devices, duration, profile
// mix, wake rate, timeline; soak shortened from its 1 h), and wake-latency at 10,000 devices at its own wake rate
// (a wake every 20 s on average): where the shipped scenarios hold on this box, with every process of the tester
// counted (k6, the engine, Toxiproxy, and the CLI itself: this process runs it). Writes
// results/bench-scenarios-<ts>/scenarios.json and the "Shipped scenarios" section of BENCHMARKS.md.
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

export async function scenariosBench(log: (l: string) => void = console.log): Promise<ScenarioRow[]> {
  const rows: ScenarioRow[] = [];
  for (const c of CASES) {
    log(`bench:scenarios: ${c.label}`);
    const self = sampleSelf();
    const r = await runScenario({ ...c.opts, echo: false, dashboard: false, charts: false, progress: 'off' });
    const cli = self();
    const run = JSON.parse(readFileSync(join(r.dir, 'run.json'), 'utf8')) as RunRecord & {
      resolved?: { devices: number; duration_ms: number };
    };
    const p = run.processes;
    const rss = (k: string) => p[k]?.rss_avg_mib ?? 0;
    const cpu = (k: string) => p[k]?.cpu_avg_pct ?? 0;
    const lag = r.summary?.metrics.vu_loop_lag?.values['p(99)'] ?? null;
    rows.push({
      label: c.label,
      devices: run.resolved?.devices ?? c.opts.devices ?? 0,
      duration_s: (run.resolved?.duration_ms ?? 0) / 1000,
      verdict: r.judgement.verdict,
      why: [...r.judgement.invalid, ...r.judgement.failures].join('; ').slice(0, 300),
      rss_mib: {
        k6: r1(rss('k6')),
        engine: r1(rss('engine')),
        toxiproxy: r1(rss('toxiproxy')),
        cli: r1(cli.rss),
        total: r1(rss('k6') + rss('engine') + rss('toxiproxy') + cli.rss),
      },
      cpu_pct: {
        k6: r1(cpu('k6')),
        engine: r1(cpu('engine')),
        toxiproxy: r1(cpu('toxiproxy')),
        cli: r1(cli.cpu),
        total: r1(cpu('k6') + cpu('engine') + cpu('toxiproxy') + cli.cpu),
      },
      server: p.server ? { rss_mib: r1(p.server.rss_avg_mib), cpu_pct: r1(p.server.cpu_avg_pct) } : null,
      vu_lag_p99_ms: lag === null ? null : r1(lag),
    });
  }
  return rows;
}

export function scenariosSection(rows: ScenarioRow[]): string {
  const head =
    '| scenario | devices | duration | verdict | tester RSS MiB: total (k6 + engine + Toxiproxy + CLI) | tester CPU %: total (k6 + engine + Toxiproxy + CLI) | server RSS / CPU | VU lag p99 |';
  const lines = rows.map(
    (r) =>
      `| ${r.label} | ${r.devices} | ${r.duration_s} s | ${r.verdict.toUpperCase()}${r.why ? `: ${r.why}` : ''} | ${r.rss_mib.total} (${r.rss_mib.k6} + ${r.rss_mib.engine} + ${r.rss_mib.toxiproxy} + ${r.rss_mib.cli}) | ${r.cpu_pct.total} (${r.cpu_pct.k6} + ${r.cpu_pct.engine} + ${r.cpu_pct.toxiproxy} + ${r.cpu_pct.cli}) | ${r.server ? `${r.server.rss_mib} MiB / ${r.server.cpu_pct}%` : '-'} | ${r.vu_lag_p99_ms ?? '-'} ms |`,
  );
  return [
    SECTION_START,
    '## Shipped scenarios at their own defaults',
    '',
    `Produced by \`npm run bench:scenarios\` on this machine, ${new Date().toISOString().slice(0, 10)}: each shipped scenario as \`npx wakestorm run <scenario>\` runs it (its devices, duration, profile mix, wake rate and timeline; the native engine; soak shortened to 3 min), then wake-latency at 10,000 devices at its own wake rate. Every tester process is counted: k6, the device engine, Toxiproxy (averages over the run, from /proc) and the CLI (its RSS max and CPU average; the bench runs it in-process). The verdict is the run's own (a FAIL or INVALID says why).`,
    '',
    head,
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
    ...lines,
    SECTION_END,
  ].join('\n');
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
  const rows = await scenariosBench();
  const dir = join(resultsRoot(), `bench-scenarios-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'scenarios.json'), `${JSON.stringify(rows, null, 2)}\n`);
  const section = scenariosSection(rows);
  writeFileSync(join(dir, 'scenarios.md'), `${section}\n`);
  const md = join(ROOT, 'BENCHMARKS.md');
  writeFileSync(md, withScenariosSection(readFileSync(md, 'utf8'), section));
  console.log(section);
}
