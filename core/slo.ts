// SLOs as data (name, metric, aggregation, target), the k6 thresholds derived from them, and per-run overrides.

import { unknownField, WakestormError } from './errors.ts';
type Aggregation = 'p(50)' | 'p(90)' | 'p(95)' | 'p(99)' | 'avg' | 'max' | 'rate' | 'count';
type Op = '<' | '<=' | '==' | '>' | '>=';

export interface Slo {
  name: string;
  metric: string;
  aggregation: Aggregation;
  op: Op;
  target: number;
  description: string;
  /** Stop the run as soon as this SLO is breached (capacity search uses it). */
  abortOnFail?: boolean;
  /**
   * Targets for the other phases of a chaos run (core/phases.ts), judged as SLOs of their own, `name@during` and
   * `name@recovery`, on the metric's submetric of that phase. Absent: that phase is not judged (during a fault the
   * default is off, not the steady target).
   */
  during?: number;
  recovery?: number;
}

/** The phases an SLO may carry an extra target for. */
const EXTRA_PHASES = ['during', 'recovery'] as const;

/** `metric` judged in another phase: its chaos tag replaced (or added). */
export function inPhase(metric: string, phase: string): string {
  if (/[{,]chaos:[a-z]+/.test(metric)) return metric.replace(/([{,])chaos:[a-z]+/, `$1chaos:${phase}`);
  const i = metric.indexOf('{');
  return i < 0 ? `${metric}{chaos:${phase}}` : `${metric.slice(0, -1)},chaos:${phase}}`;
}

/**
 * The default gate: a steady-state hypothesis and recovery. Outcomes are tagged with the phase of a chaos run they fell
 * in (chaos:steady|during|recovery, core/phases.ts); the steady SLOs judge everything outside fault windows and their
 * recovery, so a healthy server passes a chaos run, and recovery_max judges how fast the fleet came back. During a
 * fault nothing is judged unless an SLO carries a `during` target. With no timeline everything is steady.
 */
export const DEFAULT_SLOS: Slo[] = [
  {
    name: 'connect_success',
    metric: 'connect_success{chaos:steady}',
    aggregation: 'rate',
    op: '>=',
    target: 0.99,
    description: 'connect attempts in steady state that reach `connected`',
  },
  {
    name: 'wake_success',
    metric: 'wake_success{chaos:steady}',
    aggregation: 'rate',
    op: '>=',
    target: 0.99,
    description: 'wakes in steady state acknowledged (session_started) within 10 s',
  },
  {
    name: 'unplanned_drops',
    metric: 'unplanned_drops',
    aggregation: 'count',
    op: '==',
    target: 0,
    description:
      'links lost in steady state (server close, 1006, liveness check); a refused connect is connect_success',
  },
  {
    name: 'wake_ack_p95',
    metric: 'wake_ack_latency{chaos:steady}',
    aggregation: 'p(95)',
    op: '<',
    target: 300,
    description: 'wake word to session_started in steady state, ms',
  },
  {
    name: 'response_p95',
    metric: 'response_latency{chaos:steady}',
    aggregation: 'p(95)',
    op: '<',
    target: 800,
    description:
      "voice-to-voice in steady state: the end of the user's speech to the first reply audio, the server's endpointing included, ms",
  },
  {
    name: 'early_replies',
    metric: 'early_replies{chaos:steady}',
    aggregation: 'count',
    op: '==',
    target: 0,
    description:
      'answers in steady state that began before the device finished its utterance (the server cut the user off); never timed as latency',
  },
  {
    name: 'replies_unheard',
    metric: 'replies_unheard{chaos:steady}',
    aggregation: 'count',
    op: '==',
    target: 0,
    description:
      'completed sessions in steady state whose server showed no sign of hearing the speech end (no transcript after it, where the dialect has one): an answer to something other than what the user said',
  },
  {
    name: 'reply_stutter_rate',
    metric: 'reply_stutter{chaos:steady}',
    aggregation: 'rate',
    op: '<',
    target: 0.01,
    description: 'replies in steady state whose playback ran dry mid-reply (the user heard it stutter)',
  },
  {
    name: 'playback_stall_p99',
    metric: 'playback_stall_time{chaos:steady}',
    aggregation: 'p(99)',
    op: '<',
    target: 200,
    description: 'ms a reply in steady state stood dry in all, worst 1%',
  },
  {
    name: 'reply_truncated_rate',
    metric: 'reply_truncated{chaos:steady}',
    aggregation: 'rate',
    op: '==',
    target: 0,
    description: 'replies in steady state with no audio or less audio than announced',
  },
  {
    name: 'reconnect_p95',
    metric: 'reconnect_time{chaos:steady}',
    aggregation: 'p(95)',
    op: '<',
    target: 10_000,
    description: 'a link lost in steady state (not by a fault): loss noticed to connected again, ms',
  },
  {
    name: 'recovery_max',
    metric: 'recovery_time',
    aggregation: 'max',
    op: '<',
    target: 30_000,
    description:
      "a fault's end until each profile's devices are connected again at their pre-fault level, worst fault and profile, ms",
  },
  {
    name: 'resume_success',
    metric: 'resume_success',
    aggregation: 'rate',
    op: '>=',
    target: 0.99,
    description: 'sessions offered for resume after a cut, back within the resume grace, that the server kept',
  },
  {
    name: 'session_drop_rate',
    metric: 'session_drop_rate{chaos:steady}',
    aggregation: 'rate',
    op: '<',
    target: 0.01,
    description: 'sessions started in steady state that never completed',
  },
  {
    name: 'protocol_violations',
    metric: 'protocol_violations',
    aggregation: 'count',
    op: '==',
    target: 0,
    description:
      'server messages past what a device accepts (a flood, an oversized frame, too long a text, JSON too deep, a reply past its announced length or any plausible one)',
  },
  {
    name: 'devices_gave_up',
    metric: 'devices_gave_up',
    aggregation: 'count',
    op: '==',
    target: 0,
    description: 'devices that stopped trying to reconnect',
  },
  {
    name: 'barge_in_stop_p95',
    metric: 'barge_in_stop_time',
    aggregation: 'p(95)',
    op: '<',
    target: 500,
    description: "the device's abort (barge-in) to the last stale reply audio it received, ms",
  },
];

class SloError extends WakestormError {
  constructor(message: string) {
    super(message, 2);
  }

  override name = 'SloError';
}

const AGGS: Aggregation[] = ['p(50)', 'p(90)', 'p(95)', 'p(99)', 'avg', 'max', 'rate', 'count'];
const OPS: Op[] = ['<', '<=', '==', '>', '>='];

const SLO_FIELDS = [
  'name',
  'metric',
  'aggregation',
  'op',
  'target',
  'description',
  'abortOnFail',
  'during',
  'recovery',
];

function check(s: Record<string, unknown>, where: string): Slo {
  if (s === null || typeof s !== 'object' || Array.isArray(s)) throw new SloError(`${where}: must be an object`);
  // A typo'd key (a "targte") would leave the SLO judging its default silently: named instead.
  for (const k of Object.keys(s))
    if (!SLO_FIELDS.includes(k)) throw new SloError(`${where}: field "${k}" ${unknownField(k, SLO_FIELDS)}`);
  if (typeof s.name !== 'string' || !/^[a-z][a-z0-9_]*$/.test(s.name))
    throw new SloError(`${where}: "name" must be snake_case`);
  if (typeof s.metric !== 'string' || !/^[a-z_]+(\{[a-z_]+:[A-Za-z0-9._-]+\})?$/.test(s.metric))
    throw new SloError(`${where} (${s.name}): "metric" must be a metric name, optionally with one {tag:value}`);
  if (!AGGS.includes(s.aggregation as Aggregation))
    throw new SloError(`${where} (${s.name}): "aggregation" must be one of ${AGGS.join(', ')}`);
  if (!OPS.includes(s.op as Op)) throw new SloError(`${where} (${s.name}): "op" must be one of ${OPS.join(' ')}`);
  if (typeof s.target !== 'number' || !Number.isFinite(s.target))
    throw new SloError(`${where} (${s.name}): "target" must be a number`);
  for (const ph of EXTRA_PHASES) {
    if (s[ph] !== undefined && (typeof s[ph] !== 'number' || !Number.isFinite(s[ph])))
      throw new SloError(`${where} (${s.name}): "${ph}" must be a number (the target in that phase)`);
  }
  return { ...(s as unknown as Slo), description: typeof s.description === 'string' ? s.description : '' };
}

/**
 * The run's SLOs: the defaults, replaced or extended by SLO_FILE (JSON lists of SLOs, comma-separated; same name replaces),
 * then targets overridden by SLO_<name>=<number>, and SLOs dropped by SLO_<name>=off.
 */
export function resolveSlos(
  env: Record<string, string | undefined>,
  readFile: (p: string) => string,
  base: Slo[] = DEFAULT_SLOS,
): Slo[] {
  let slos = base.map((s) => ({ ...s }));
  // SLO_FILE: one file or a comma-separated list; they merge in order, the same name replacing.
  for (const file of (env.SLO_FILE ?? '')
    .split(',')
    .map((f) => f.trim())
    .filter(Boolean)) {
    let list: unknown;
    try {
      list = JSON.parse(readFile(file));
    } catch (e) {
      throw new SloError(`SLO_FILE ${file}: ${e instanceof SyntaxError ? 'not valid JSON' : 'cannot read it'}`);
    }
    if (!Array.isArray(list)) throw new SloError(`SLO_FILE ${file}: must be a JSON list of SLOs`);
    list.forEach((raw, i) => {
      const s = check(raw as Record<string, unknown>, `SLO_FILE ${file} entry ${i}`);
      const at = slos.findIndex((x) => x.name === s.name);
      if (at >= 0) slos[at] = s;
      else slos.push(s);
    });
  }
  for (const [k, v] of Object.entries(env)) {
    if (!k.startsWith('SLO_') || k === 'SLO_FILE' || v === undefined) continue;
    // SLO_<name>=v sets the steady target; SLO_<name>__during=v and __recovery=v the target in that phase (k6 takes
    // only letters, digits and _ in an -e name; the CLI's --slo name@during=v becomes this).
    const [name, phase] = k.slice(4).split('__') as [string, string | undefined];
    const s = slos.find((x) => x.name === name);
    if (!s) throw new SloError(`${k}: no SLO named "${name}"; known: ${slos.map((x) => x.name).join(', ')}`);
    if (phase !== undefined && !(EXTRA_PHASES as readonly string[]).includes(phase))
      throw new SloError(`${k}: the phase must be ${EXTRA_PHASES.join(' or ')}, got '${phase}'`);
    const num = /^-?\d+(\.\d+)?$/.test(v) ? Number(v) : null;
    if (v !== 'off' && num === null) throw new SloError(`${k} must be a number or 'off', got '${v}'`);
    if (phase) s[phase as (typeof EXTRA_PHASES)[number]] = num ?? undefined;
    else if (num === null) slos = slos.filter((x) => x !== s);
    else s.target = num;
  }
  return expandPhases(slos);
}

/** Each SLO's extra phase targets as SLOs of their own (`name@during` on the metric's during submetric). */
function expandPhases(slos: Slo[]): Slo[] {
  const out: Slo[] = [];
  for (const s of slos) {
    const { during, recovery, ...base } = s;
    out.push(base);
    for (const [ph, target] of [
      ['during', during],
      ['recovery', recovery],
    ] as const) {
      if (target === undefined) continue;
      out.push({
        ...base,
        name: `${s.name}@${ph}`,
        metric: inPhase(s.metric, ph),
        target,
        description: `${s.description} (${ph === 'during' ? 'during a fault' : 'recovering from a fault'})`,
      });
    }
  }
  return out;
}

function thresholdExpr(s: Slo): string {
  return `${s.aggregation}${s.op}${s.target}`;
}

/** k6 `thresholds` from SLOs; several SLOs on one metric share its entry. */
export function sloThresholds(slos: Slo[], extra: Record<string, unknown[]> = {}): Record<string, unknown[]> {
  const out: Record<string, unknown[]> = { ...extra };
  for (const s of slos) {
    const expr = thresholdExpr(s);
    const entry = s.abortOnFail ? { threshold: expr, abortOnFail: true, delayAbortEval: '10s' } : expr;
    (out[s.metric] ??= []).push(entry);
  }
  return out;
}
