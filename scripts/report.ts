// `wakestorm report <run>` (the verdict and key numbers again, report.html and its charts re-rendered) and `wakestorm compare <a> <b>` (regression gate).
import { WakestormError } from '../core/errors.ts';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import type { Slo } from '../core/slo.ts';
import { paramText, type RunRecordAsRead, type SummaryData } from '../core/run-contract.ts';
import { judge, judgeSlo, verdictLines } from '../core/verdict.ts';
import { renderReport } from './report-html.ts';
import { resultsRoot } from './run.ts';

class ReportError extends WakestormError {
  constructor(message: string) {
    super(message, 1);
  }

  override name = 'ReportError';
}

export interface LoadedRun {
  dir: string;
  run: RunRecordAsRead;
  summary: SummaryData;
}

/** A run by id, by path, or 'latest'. */
export function loadRun(ref: string, root = resultsRoot()): LoadedRun {
  const candidates = [ref, join(root, ref)];
  const dir = candidates.find((c) => existsSync(join(c, 'run.json')));
  if (!dir) throw new ReportError(`no run '${ref}': give a run id from ${root}/, a run folder, or 'latest'`);
  const real = realpathSync(dir);
  let run: LoadedRun['run'];
  let summary: SummaryData;
  try {
    run = JSON.parse(readFileSync(join(real, 'run.json'), 'utf8'));
  } catch {
    throw new ReportError(`run '${ref}': run.json is not readable JSON`);
  }
  try {
    summary = JSON.parse(readFileSync(join(real, 'summary.json'), 'utf8'));
  } catch {
    throw new ReportError(
      `run '${ref}' has no summary.json (it ended before k6 wrote one${run.incomplete ? '; it is marked incomplete' : ''})`,
    );
  }
  return { dir: real, run, summary };
}

const KEY_METRICS: [string, string][] = [
  ['wake_ack_latency', 'trend'],
  ['response_latency', 'trend'],
  ['reconnect_time', 'trend'],
  ['disconnect_detect_time', 'trend'],
  ['ping_rtt', 'trend'],
  ['sessions_started', 'counter'],
  ['sessions_completed', 'counter'],
  ['sessions_dropped', 'counter'],
  ['connection_drops', 'counter'],
  ['devices_gave_up', 'counter'],
  ['playback_underruns', 'counter'],
];

export async function reportCommand(ref: string, resultsRoot?: string): Promise<number> {
  const r = loadRun(ref, resultsRoot);
  const { run, summary } = r;
  console.log(
    `run ${run.run_id} (${run.scenario}) ${run.started_at} -> ${run.ended_at}${run.incomplete ? '  INCOMPLETE' : ''}`,
  );
  console.log(
    `  ${Object.entries(run.parameters)
      .filter(([k]) => /^[A-Z_]+$/.test(k) && !/URL|DIR/.test(k))
      .map(([k, v]) => `${k}=${paramText(v)}`)
      .join(' ')}`,
  );
  console.log('');
  for (const [m, kind] of KEY_METRICS) {
    const v = summary.metrics[m]?.values;
    if (!v) continue;
    if (kind === 'trend') {
      if (!v.count) continue;
      console.log(
        `  ${m.padEnd(24)} p50 ${v['p(50)']!.toFixed(1)} ms   p95 ${v['p(95)']!.toFixed(1)} ms   p99 ${v['p(99)']!.toFixed(1)} ms   n=${v.count}`,
      );
    } else console.log(`  ${m.padEnd(24)} ${v.count}`);
  }
  console.log('');
  // The same judgement the run made: what k6 measured, plus what the CLI saw of the tester (run.json).
  const j = judge(summary, run.slos, run.invalid_reasons ?? [], {
    unmatchedTypes: run.unmatched_types ?? [],
    profiles: run.resolved?.profiles,
  });
  for (const l of verdictLines(j)) console.log(l);
  if (run.incomplete) console.log('(the run is marked incomplete)');
  const charts = await renderReport(r.dir);
  const files = [
    'report.html',
    'k6-dashboard.html',
    ...charts,
    'junit.xml',
    'summary.json',
    'events.json',
    'server-metrics.txt',
  ].filter((f) => existsSync(join(r.dir, f)));
  console.log(`files: ${files.map((f) => join(r.dir, f)).join('\n       ')}`);
  return j.exit_code;
}

interface CompareRow {
  slo: string;
  metric: string;
  a: number | null;
  b: number | null;
  changePct: number | null;
  worse: boolean;
}

/**
 * Compares each SLO metric of run b against run a. Latencies are worse when they grow by more than
 * `tolerancePct` and at least `minDeltaMs`; rates when they grow by more than `rateTolerance` (absolute);
 * counts when they grow at all.
 */
function compareRuns(
  a: LoadedRun,
  b: LoadedRun,
  tolerancePct = 10,
  minDeltaMs = 5,
  rateTolerance = 0.005,
): CompareRow[] {
  const slos = a.run.slos;
  return slos.map((s) => {
    const x = judgeSlo(a.summary, s).value;
    const y = judgeSlo(b.summary, s).value;
    const changePct = x !== null && y !== null && x !== 0 ? ((y - x) / x) * 100 : null;
    let worse = false;
    // Lower is better for every '<' SLO; higher is better for '>' ones.
    const sign = s.op.startsWith('>') ? -1 : 1;
    if (x !== null && y !== null) {
      const d = (y - x) * sign;
      if (s.aggregation === 'rate') worse = d > rateTolerance;
      else if (s.aggregation === 'count') worse = d > 0;
      else worse = d > minDeltaMs && d > (Math.abs(x) * tolerancePct) / 100;
    } else if (x !== null && y === null) worse = true; // data in a, none in b: what a measured no longer works
    return { slo: s.name, metric: s.metric, a: x, b: y, changePct, worse };
  });
}

/** Why two runs cannot be compared at all (refused), and what makes the comparison doubtful (warned). */
function comparability(a: LoadedRun, b: LoadedRun): { refuse: string[]; warn: string[] } {
  const refuse: string[] = [];
  const warn: string[] = [];
  for (const [tag, r] of [
    ['a', a],
    ['b', b],
  ] as const) {
    if (r.run.incomplete) refuse.push(`run ${tag} (${r.run.run_id}) is incomplete`);
    if (r.run.verdict === 'invalid')
      refuse.push(`run ${tag} (${r.run.run_id}) is INVALID: its numbers describe the tester`);
  }
  if (a.run.scenario !== b.run.scenario) warn.push(`different scenarios: ${a.run.scenario} vs ${b.run.scenario}`);
  const devices = (r: LoadedRun) =>
    paramText(
      (r.run as { resolved?: { devices?: number } | null }).resolved?.devices ?? r.run.parameters.DEVICES ?? '?',
    );
  if (devices(a) !== devices(b)) warn.push(`different fleet sizes: ${devices(a)} vs ${devices(b)} devices`);
  return { refuse, warn };
}

export function compareCommand(refA: string, refB: string, tolerancePct: number, resultsRoot?: string): number {
  const a = loadRun(refA, resultsRoot);
  const b = loadRun(refB, resultsRoot);
  const { refuse, warn } = comparability(a, b);
  if (refuse.length) throw new ReportError(`cannot compare: ${refuse.join('; ')}`);
  for (const w of warn) console.log(`WARNING: ${w}: the comparison may not mean what it says`);
  const rows = compareRuns(a, b, tolerancePct);
  const fmt = (v: number | null, s: Slo) =>
    v === null
      ? 'no data'
      : s.aggregation === 'rate'
        ? `${(v * 100).toFixed(2)}%`
        : s.aggregation === 'count'
          ? String(v)
          : `${v.toFixed(1)} ms`;
  console.log(`compare ${a.run.run_id} (a) -> ${b.run.run_id} (b), tolerance ${tolerancePct}%`);
  console.log(`  ${'SLO'.padEnd(20)} ${'a'.padEnd(12)} ${'b'.padEnd(12)} ${'change'.padEnd(10)}`);
  rows.forEach((r, i) => {
    const s = a.run.slos[i]!;
    const ch = r.changePct === null ? '-' : `${r.changePct >= 0 ? '+' : ''}${r.changePct.toFixed(1)}%`;
    console.log(
      `  ${r.slo.padEnd(20)} ${fmt(r.a, s).padEnd(12)} ${fmt(r.b, s).padEnd(12)} ${ch.padEnd(10)} ${r.worse ? (r.a !== null && r.b === null ? 'WORSE (no data in b)' : 'WORSE') : ''}`,
    );
  });
  const worse = rows.filter((r) => r.worse);
  console.log(
    worse.length
      ? `\nREGRESSION: ${worse.map((r) => r.slo).join(', ')} worse beyond tolerance`
      : '\nno regression beyond tolerance',
  );
  return worse.length ? 1 : 0;
}
