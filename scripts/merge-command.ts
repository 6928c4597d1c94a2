// `wakestorm merge <dir>`: one verdict from the results of k6 instances that ran apart (the k6-operator's runners,
// each writing <dir>/instance-N/ through deploy/runner-entry.sh): summary.json merged from every raw sample, then
// junit.xml, run.json and report.html as `wakestorm run` writes them.
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { chaosEventsIn, unappliedFaults, type ChaosEvent, type EventsFile } from '../core/chaos-events.ts';
import { WakestormError } from '../core/errors.ts';
import { verdictFields, type ResolvedRun, type RunRecord } from '../core/run-contract.ts';
import { DEFAULT_SLOS } from '../core/slo.ts';
import { judge, junitXml, verdictLines } from '../core/verdict.ts';
import { unmatchedTypesIn } from './k6.ts';
import { mergeInstanceDirs } from './merge-instances.ts';
import { renderReport } from './report-html.ts';
import { readJson, writeResult } from './run-dir.ts';

class MergeError extends WakestormError {
  constructor(message: string) {
    super(message, 2);
  }

  override name = 'MergeError';
}

/** Merges <dir>/instance-*; prints the verdict; returns its exit code (0 PASS, 99 FAIL, 3 INVALID). */
export async function mergeCommand(ref: string, log: (l: string) => void = console.log): Promise<number> {
  const dir = resolve(ref);
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    throw new MergeError(`merge: no folder '${ref}'`);
  }
  const instances = entries
    .map((e) => /^instance-(\d+)$/.exec(e))
    .filter((m): m is RegExpExecArray => !!m && statSync(join(dir, m[0])).isDirectory())
    .sort((a, b) => Number(a[1]) - Number(b[1]))
    .map((m) => join(dir, m[0]));
  if (!instances.length)
    throw new MergeError(`merge: ${ref} has no instance-N/ folders (each runner writes one: docs/distributed.md)`);
  // The SLOs and parameters the scenario resolved, as instance 0 wrote them (read before the merge moves the file).
  const resolved = readJson<ResolvedRun & { slos?: RunRecord['slos'] }>(join(instances[0]!, 'scenario.json'));
  const slos = resolved?.slos ?? DEFAULT_SLOS;
  const startedAt = Math.min(...instances.map((d) => statSync(d).mtimeMs));
  const faults = faultsOfRunners(instances);
  const merged = await mergeInstanceDirs(dir, instances, slos, true);
  merged.invalid.push(...faults.invalid);
  if (faults.planned.length)
    writeResult(
      join(dir, 'events.json'),
      JSON.stringify({ planned: faults.planned, applied: faults.applied }, null, 1),
    );
  const unmatchedTypes = [...new Set(instances.flatMap((d) => unmatchedTypesIn(join(d, 'k6.log'))))];
  // Runners run the native engine (runner-entry.sh starts one beside k6).
  const ctx = { unmatchedTypes, profiles: resolved?.profiles, engine: 'native' };
  const judgement = judge(merged.summary, slos, merged.invalid, ctx);
  const seconds = (merged.summary?.state?.testRunDurationMs ?? 0) / 1000;
  const scenario = basename(dir);
  writeResult(join(dir, 'junit.xml'), junitXml(judgement, scenario, seconds));
  const run: RunRecord = {
    run_id: basename(dir),
    scenario,
    script: '',
    command: `wakestorm merge ${ref}`,
    parameters: { instances: instances.length, merged_from: 'instance folders' },
    slos,
    ...verdictFields(judgement),
    k6_exit_code: 0,
    incomplete: !merged.summary,
    k6_stuck: false,
    tools: {},
    git_commit: null,
    machine: {},
    started_at: new Date(startedAt).toISOString(),
    ended_at: new Date(startedAt + seconds * 1000).toISOString(),
    processes: {},
    unmatched_types: unmatchedTypes,
    resolved,
  };
  writeResult(join(dir, 'run.json'), JSON.stringify(run, null, 1));
  try {
    await renderReport(dir);
  } catch (e) {
    log(`wakestorm merge: report not rendered: ${(e as Error).message}`);
  }
  log([`merged ${instances.length} instance(s) in ${dir}`, '', ...verdictLines(judgement)].join('\n'));
  return judgement.exit_code;
}

/**
 * Every runner drives its own Toxiproxy through the whole timeline (one chaos VU per runner: docs/distributed.md), so
 * each must have applied every planned onset and end; its k6.log (runner-entry.sh keeps it) says which it applied.
 * A runner that applied fewer, or could not apply one, makes the run INVALID: its devices never met the fault.
 */
function faultsOfRunners(instances: string[]): {
  planned: EventsFile['planned'];
  applied: ChaosEvent[];
  invalid: string[];
} {
  const planned = readJson<EventsFile>(join(instances[0]!, 'events.json'))?.planned ?? [];
  const applied: ChaosEvent[] = [];
  const invalid: string[] = [];
  if (!planned.length) return { planned, applied, invalid };
  for (const d of instances) {
    let text: string;
    try {
      text = readFileSync(join(d, 'k6.log'), 'utf8');
    } catch {
      invalid.push(`${basename(d)}: no k6.log, so the faults it applied cannot be checked`);
      continue;
    }
    const own = chaosEventsIn(text);
    applied.push(...own);
    invalid.push(...unappliedFaults(planned, own, `${basename(d)}: `));
  }
  applied.sort((a, b) => a.t - b.t);
  return { planned, applied, invalid };
}
