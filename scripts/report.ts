// `wakestorm report <run>` (the verdict and key numbers again, report.html and its charts re-rendered) and `wakestorm compare <a> <b>` (regression gate).
import { WakestormError } from '../core/errors.ts';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { judgeContextOf, paramText, type SummaryData } from '../core/run-contract.ts';
import { judge, verdictLines } from '../core/verdict.ts';
import {
  baselineLines,
  changeText,
  comparability,
  compareRuns,
  compareValueText,
  worseText,
  type LoadedRun,
} from './compare.ts';
import { renderReport } from './report-html.ts';
import { resultsRoot } from './run.ts';

class ReportError extends WakestormError {
  constructor(message: string) {
    super(message, 1);
  }

  override name = 'ReportError';
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

export async function reportCommand(
  ref: string,
  resultsRoot?: string,
  baselineRef?: string,
  tolerancePct = 10,
): Promise<number> {
  const r = loadRun(ref, resultsRoot);
  const baseline = baselineRef ? loadRun(baselineRef, resultsRoot) : undefined;
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
  const j = judge(summary, run.slos, run.invalid_reasons ?? [], judgeContextOf(run));
  for (const l of verdictLines(j)) console.log(l);
  if (run.incomplete) console.log('(the run is marked incomplete)');
  if (baseline) for (const l of baselineLines(baseline, r, tolerancePct)) console.log(l);
  const charts = await renderReport(r.dir, { baseline, tolerancePct });
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

export function compareCommand(refA: string, refB: string, tolerancePct: number, resultsRoot?: string): number {
  const a = loadRun(refA, resultsRoot);
  const b = loadRun(refB, resultsRoot);
  const { refuse, warn } = comparability(a, b);
  if (refuse.length) throw new ReportError(`cannot compare: ${refuse.join('; ')}`);
  for (const w of warn) console.log(`WARNING: ${w}: the comparison may not mean what it says`);
  const rows = compareRuns(a, b, tolerancePct);
  console.log(`compare ${a.run.run_id} (a) -> ${b.run.run_id} (b), tolerance ${tolerancePct}%`);
  console.log(`  ${'SLO'.padEnd(20)} ${'a'.padEnd(12)} ${'b'.padEnd(12)} ${'change'.padEnd(10)}`);
  rows.forEach((r, i) => {
    const s = a.run.slos[i]!;
    console.log(
      `  ${r.slo.padEnd(20)} ${compareValueText(r.a, s).padEnd(12)} ${compareValueText(r.b, s).padEnd(12)} ${changeText(r).padEnd(10)} ${worseText(r)}`,
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
