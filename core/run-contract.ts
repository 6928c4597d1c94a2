// The contract between the CLI (Node) and k6: what the CLI hands k6 (RunVars, as -e variables), what k6 hands back
// (its summary, scenario.json, events.json) and what the CLI writes for people and CI (run.json). Written once;
// both runtimes import these types, and run-config.ts reads RunVars with the one set of bounds.
import type { Profile } from './profiles.ts';
import type { Slo } from './slo.ts';
import type { SummaryData } from './k6-summary.ts';
import type { WakeSchedule } from './device-env.ts';
import type { Judgement, JudgeContext, SloResult, Verdict } from './verdict.ts';

export type { SummaryData };

/**
 * Every -e variable a wakestorm scenario reads. `wakestorm run` writes them; plain `k6 run -e …` takes the same names.
 * All are strings on the wire (k6's __ENV). SLO_<name> entries override one SLO each (a number, or `off`).
 */
export type RunVars = {
  /** Fleet size, 1-1,000,000 (DEVICE_BOUNDS). */
  DEVICES?: string;
  /** Devices one VU runs, 1-100,000 (default 50). */
  DEVICES_PER_VU?: string;
  /** Run length and connect ramp: durations in the one grammar (parseDuration: 90s, 2m, 1h30m; a bare number is seconds). */
  DURATION?: string;
  RAMP?: string;
  /** WebSocket base(s) the devices connect to, comma-separated (Toxiproxy shards); loopback unless ALLOW_REMOTE=1. */
  TARGET_URL?: string;
  ALLOW_REMOTE?: '1';
  /**
   * A wss:// target behind Toxiproxy: TARGET_URL names the proxy, this the server (the TLS SNI and the name its
   * certificate must hold). The trusted roots are the processes' own (SSL_CERT_FILE; the CLI's --ca sets it).
   */
  TLS_SERVER_NAME?: string;
  /** http(s):// base of a dialect's provision call (the OTA server); unset: the target over http. */
  PROVISION_URL?: string;
  /** 1: wss:// certificates are not verified (the CLI's --insecure-tls; the report says so). */
  TLS_INSECURE?: '1';
  /** Toxiproxy API(s), comma-separated: a timeline applies to every one. */
  TOXIPROXY_URL?: string;
  /**
   * The native device engine's control socket (ws://127.0.0.1:PORT/control, loopback only): the devices run in the
   * engine, k6 drives it and records its samples. Unset: the devices run in k6 (k6/websockets).
   */
  ENGINE_URL?: string;
  /** The stack's control API (server-restart faults). */
  CONTROL_URL?: string;
  /** The reference server's HTTP origin (health, metrics), when the stack runs it. */
  SERVER_URL?: string;
  /** Bearer token, or a file whose first line is one (the CLI only ever passes the file). */
  TOKEN?: string;
  TOKEN_FILE?: string;
  /** Profile mix (`recommended`, `a:3,b:1`, `./my.json`), a reconnect policy for all, and the wake schedule. */
  PROFILE?: string;
  BACKOFF?: string;
  WAKE?: string;
  /** A dialect for every profile: a shipped name (wakestorm, xiaozhi) or a dialect .json file. */
  DIALECT?: string;
  /** A shipped timeline name or a JSON file. */
  TIMELINE?: string;
  /** JSON SLO files, comma-separated, merged in order. */
  SLO_FILE?: string;
  SEED?: string;
  ID_PREFIX?: string;
  /** Where handleSummary writes its files (the CLI creates it); NO_RESULTS=1 writes none. */
  RESULTS_DIR?: string;
  NO_RESULTS?: '1';
  /** One more copy of k6's summary data. */
  SUMMARY_JSON?: string;
  /** `cli`: the CLI judges the run (it also sees processes and interrupts); k6 prints metrics only. */
  VERDICT?: 'cli';
  /** Chaos VUs: 1 (default) drives every Toxiproxy; N puts one in each of N execution segments (k6-operator runners). */
  CHAOS_VUS?: string;
  /** `off`: k6 prints no metrics table (one instance of several: the CLI prints the merged one). */
  SUMMARY_TABLE?: 'off';
  [slo: `SLO_${string}`]: string | undefined;
};

/** RunVars and a scenario's own variables (bench/k6/calibration.ts reads CUT_AT_MS): what goes to k6 as -e. */
export type K6Vars = RunVars & { [name: string]: string | undefined };

/** The -e arguments for k6 (run or inspect): one place writes them. */
export function k6VarArgs(vars: K6Vars): string[] {
  const args: string[] = [];
  for (const [k, v] of Object.entries(vars)) if (v !== undefined) args.push('-e', `${k}=${v}`);
  return args;
}

/** What shaped a run, as the scenario resolved it (defaults included): k6 writes it, run.json keeps it as `resolved`. */
export interface ResolvedRun {
  devices: number;
  devices_per_vu: number;
  vus: number;
  duration_ms: number;
  ramp_ms: number;
  profile_mix: { profile: string; weight: number }[];
  profiles: Profile[];
  /** The dialect each profile spoke, by profile name (DIALECT, or the profile's own, or wakestorm). */
  dialects?: Record<string, string>;
  timeline: {
    name: string;
    steps: {
      at_ms: number;
      for_ms: number;
      fault: string;
      streams: string[];
      params: Record<string, number>;
      toxicity: number;
    }[];
  };
  wake: WakeSchedule;
  seed: string;
  slos: Slo[];
  /** The timeline's zero on the wall clock (Unix ms): fault at_ms count from it, and so do the report's time axes. */
  epoch_ms?: number;
}

/** One process's CPU and memory over the run, sampled once a second from /proc. */
export interface ProcessStats {
  rss_max_mib: number;
  rss_avg_mib: number;
  cpu_avg_pct: number;
  /** The busiest second. */
  cpu_max_pct: number;
}

/** run.json: the verdict and everything needed to read or reproduce the run. Older runs may lack the later fields. */
export interface RunRecord {
  run_id: string;
  scenario: string;
  script: string;
  /** The command line, with any secret redacted. */
  command: string;
  parameters: Record<string, unknown>;
  slos: Slo[];
  exit_code: number;
  k6_exit_code: number;
  verdict: Verdict;
  verdict_line: string;
  invalid_reasons: string[];
  fail_reasons: string[];
  /** What the firmware's own behaviour explains (breaches and fault-time comparisons): reported, not failed. */
  findings?: string[];
  slo_results: SloResult[];
  incomplete: boolean;
  k6_stuck: boolean;
  tools: Record<string, string>;
  git_commit: string | null;
  machine: Record<string, unknown>;
  started_at: string;
  ended_at: string;
  processes: Record<string, ProcessStats | null>;
  /** Types of server messages the dialect matched no step of (from k6's log; the verdict's culprits name them). */
  unmatched_types?: string[];
  /** What the CLI did to the tester during the run that the verdict weighs (JudgeContext): why, when it did. */
  tester_stopped?: { overrun?: string; closes_unanswered?: string; violations_logged?: string[] };
  resolved: ResolvedRun | null;
}

/** The engine that ran the run's devices ('native' or 'k6'), as run.json recorded it; undefined for an older run. */
export function engineOf(run: { parameters?: Record<string, unknown> }): string | undefined {
  const e = run.parameters?.engine;
  return typeof e === 'string' ? e : undefined;
}

/** The judgement's context as the run recorded it: a report judges the run again exactly as the run did. */
export function judgeContextOf(run: RunRecordAsRead): JudgeContext {
  return {
    unmatchedTypes: run.unmatched_types ?? [],
    engine: engineOf(run),
    profiles: run.resolved?.profiles,
    testerOverrun: run.tester_stopped?.overrun,
    closesUnanswered: run.tester_stopped?.closes_unanswered,
    violationsLogged: run.tester_stopped?.violations_logged,
  };
}

/** run.json as a reader takes it: a run written by an older wakestorm may lack any field but these. */
export type RunRecordAsRead = Pick<
  RunRecord,
  'run_id' | 'scenario' | 'slos' | 'parameters' | 'started_at' | 'ended_at'
> &
  Partial<RunRecord>;

/** The verdict fields of run.json, from a judgement. */
export function verdictFields(
  j: Judgement,
): Pick<
  RunRecord,
  'exit_code' | 'verdict' | 'verdict_line' | 'invalid_reasons' | 'fail_reasons' | 'findings' | 'slo_results'
> {
  return {
    exit_code: j.exit_code,
    verdict: j.verdict,
    verdict_line: j.headline,
    invalid_reasons: j.invalid,
    fail_reasons: j.failures,
    findings: j.findings,
    slo_results: j.slos,
  };
}

/** A run parameter as a person reads it: a string, number or boolean as itself, anything else as JSON. */
export function paramText(v: unknown): string {
  return typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean'
    ? String(v)
    : (JSON.stringify(v) ?? '');
}
