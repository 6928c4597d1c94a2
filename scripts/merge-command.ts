// `wakestorm merge <dir>`: one verdict from the results of k6 instances that ran apart (the k6-operator's runners,
// each writing <dir>/instance-N/ through deploy/runner-entry.sh): summary.json merged from every raw sample, then
// junit.xml, run.json and report.html as `wakestorm run` writes them.
import { readdirSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
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
  const merged = await mergeInstanceDirs(dir, instances, slos, true);
  const unmatchedTypes = [...new Set(instances.flatMap((d) => unmatchedTypesIn(join(d, 'k6.log'))))];
  const ctx = { unmatchedTypes, profiles: resolved?.profiles };
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
