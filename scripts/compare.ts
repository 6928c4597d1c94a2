// Two runs side by side: each SLO's value in a baseline run and in another, its change, and whether it got worse beyond
// a tolerance (`wakestorm compare`, the report's baseline section); and what makes two runs incomparable.
import type { Slo } from '../core/slo.ts';
import { paramText, type RunRecordAsRead, type SummaryData } from '../core/run-contract.ts';
import { judgeSlo } from '../core/verdict.ts';

export interface LoadedRun {
  dir: string;
  run: RunRecordAsRead;
  summary: SummaryData;
}

export interface CompareRow {
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
export function compareRuns(
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
export function comparability(a: LoadedRun, b: LoadedRun): { refuse: string[]; warn: string[] } {
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

/** An SLO's value as `compare` and the report print it. */
export function compareValueText(v: number | null, s: Slo): string {
  return v === null
    ? 'no data'
    : s.aggregation === 'rate'
      ? `${(v * 100).toFixed(2)}%`
      : s.aggregation === 'count'
        ? String(v)
        : `${v.toFixed(1)} ms`;
}

/** A row's change as a signed percentage, '-' when it has none. */
export function changeText(r: CompareRow): string {
  return r.changePct === null ? '-' : `${r.changePct >= 0 ? '+' : ''}${r.changePct.toFixed(1)}%`;
}

/** A worse row's mark: WORSE, or WORSE (no data in b) when b lost what a measured. */
export function worseText(r: CompareRow): string {
  return r.worse ? (r.a !== null && r.b === null ? 'WORSE (no data in b)' : 'WORSE') : '';
}

/** One line (or a refusal) saying how a run stands against its baseline: the terminal's twin of the report's block. */
export function baselineLines(baseline: LoadedRun, run: LoadedRun, tolerancePct = 10): string[] {
  const { refuse, warn } = comparability(baseline, run);
  const at = `against baseline ${baseline.run.run_id}`;
  if (refuse.length) return [`${at}: not compared: ${refuse.join('; ')}`];
  const worse = compareRuns(baseline, run, tolerancePct).filter((r) => r.worse);
  return [
    ...warn.map((w) => `${at}: WARNING: ${w}`),
    worse.length
      ? `${at}: worse beyond tolerance (${tolerancePct}%): ${worse.map((r) => r.slo).join(', ')}`
      : `${at}: no SLO worse beyond tolerance (${tolerancePct}%)`,
  ];
}
