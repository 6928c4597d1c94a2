// The verdict of a run: PASS only what was seen to work, FAIL with the culprit, INVALID when the tester itself failed.
// Runtime-free: k6's handleSummary and the CLI judge with the same code; the CLI adds what only it can see (processes
// that died, an interrupt, k6's own exit code).
import { CLOSE_CODE_NAMES, CLOSE_CODE_RANGES, CREDENTIAL_REFUSALS } from './protocol.ts';
import type { Profile } from './profiles.ts';
import type { Slo } from './slo.ts';
import type { MetricSummary, SummaryData } from './k6-summary.ts';

export type Verdict = 'pass' | 'fail' | 'invalid';
/**
 * 'finding': breached only by firmware profiles whose own configured behaviour explains it (a fixed backoff longer than
 * the target, giving up after a few tries, a long liveness bound) while the server met the target for the rest of the
 * fleet: a finding about the firmware, reported, not a failure of the server.
 */
type SloStatus = 'pass' | 'fail' | 'n/a' | 'finding';

/** Exit codes of `wakestorm run` (docs/ci.md). 3 for INVALID stays clear of k6's own 97-110 and of 1 and 2. */
export const VERDICT_EXIT: Record<Verdict, number> = { pass: 0, fail: 99, invalid: 3 };

/**
 * Bounds on the generator's own delay, beyond which its numbers describe the tester, not the server (BENCHMARKS.md,
 * fidelity: up to 5,000 devices on 2 cores the VU loop lag p99 was ≤ 18 ms and latency p50 errors ≤ 3 ms; at 10,000
 * devices with audio p99 reached 127 ms, uplink frames slipped 0.9-5%, and the wake-ack and response tails grew by
 * hundreds of ms). A p95 lag of 50 ms can move a p95 latency by as much; a 0.5% slip rate is five times the bench's
 * "holds" criterion (1 in 1000).
 */
export const SATURATION = {
  /** vu_loop_lag p(95), ms. */
  vuLoopLagP95Ms: 50,
  /**
   * vu_loop_lag p(99) and max, ms: the tail of the generator's own delay. A generator that stalls for seconds (frozen,
   * starved) sends and hears nothing meanwhile and times what it missed as the server's: however rare the stall, the
   * samples around it are the tester's, not the server's (an 8 s freeze of k6 gave p95 well under the bound).
   */
  vuLoopLagP99Ms: 250,
  vuLoopLagMaxMs: 2000,
  /** audio_slips / audio_frames. */
  audioSlipShare: 0.005,
  /** Fewer slips than this are noise whatever the share (a short run has few frames). */
  minAudioSlips: 10,
  /**
   * What a jitter buffer absorbs: 1 uplink frame in 1000 more than 60 ms late. The bench's "holds" criterion, and
   * the conformance cases' budget (a shared 2-core VM stalls a process for tens of ms now and then).
   */
  heldAudioSlipShare: 0.001,
};

/** How long a wake may wait for its acknowledgement before it counts as failed (wake_success). */
export const WAKE_ACK_TIMEOUT_MS = 10_000;

/**
 * At the run's end, a wake or an end of speech older than this that is still unanswered was owed its answer: the
 * server was late, not the run short. Only younger ones count as open at the end (wakes_open_at_end,
 * sessions_open_at_end) and are left out of the SLOs that need their outcome.
 */
export const END_DUE_MS = 5000;

/** The tag that says which phase of a chaos run an outcome fell in: `chaos:steady`, `chaos:during`, `chaos:recovery`. */
export const CHAOS_TAG = 'chaos';

/** Why a link or a connect attempt ended, as the `cause` tag: where to look first. */
export const CAUSES: Record<string, { phase: string; look: string }> = {
  server_close: { phase: 'connected', look: 'the server closed the link' },
  abnormal: {
    phase: 'connected',
    look: 'the TCP connection ended with no close frame (server crash, reset, or network)',
  },
  liveness: {
    phase: 'connected',
    look: "the device's own liveness check fired: the server went silent or stopped answering its heartbeat",
  },
  refused: {
    phase: 'connect',
    look: 'the upgrade was refused or the TCP connect failed (auth, capacity, server down)',
  },
  handshake: {
    phase: 'connect',
    look: "the socket opened but the server never sent the dialect's ready message (recv.ready), or closed it first",
  },
  timeout: { phase: 'connect', look: 'the connect did not finish in time' },
  provision: {
    phase: 'provision',
    look: "the HTTP call before the socket (the dialect's provision, e.g. xiaozhi's OTA check) was refused, unanswered or not JSON",
  },
  violation: {
    phase: 'connected',
    look: 'the device closed the link: the server broke the protocol (protocol_violations says how)',
  },
};

/** The phase of a device's life each SLO metric judges. */
const PHASE: Record<string, string> = {
  connect_success: 'connect',
  wake_success: 'wake',
  wake_ack_latency: 'wake',
  response_latency: 'reply',
  endpointing_latency: 'endpointing',
  processing_latency: 'reply',
  early_replies: 'reply',
  replies_unheard: 'reply',
  reply_stutter: 'playback',
  playback_stall_time: 'playback',
  reply_truncated: 'playback',
  session_drop_rate: 'conversation',
  reconnect_time: 'reconnect',
  devices_gave_up: 'reconnect',
  unplanned_drops: 'connected',
  playback_underruns: 'playback',
  ping_rtt: 'keepalive',
  barge_in_stop_time: 'barge-in',
  recovery_time: 'recovery',
  resume_success: 'resume',
  protocol_violations: 'intake',
};

/**
 * At the end of a run a device still reconnecting after this long reports its wait so far as a reconnect_time sample
 * (a lower bound); one lost more recently had no time to come back and counts in reconnects_unfinished.
 */
export const RECONNECT_CENSOR_MS = 10_000;

/** Replies owed to a reply SLO: the completed sessions when no reply was judged at all, else none beyond those judged. */
function repliesOwed(d: SummaryData, metric: string): number {
  return samples(d.metrics[metric]) > 0 ? 0 : count(d, 'sessions_completed');
}

/** What must have happened for an SLO's metric to owe a sample: metric → [how many were owed, what they are, what is missing]. */
const PRECONDITION: Record<string, [(d: SummaryData) => number, string, string]> = {
  // A dialect whose server acknowledges nothing owes no acknowledgement latency (wakes_without_ack).
  // A wake or a session the run's end cut owes no outcome (wakes_open_at_end, sessions_open_at_end).
  wake_ack_latency: [
    (d) => Math.max(0, count(d, 'wakes') - count(d, 'wakes_without_ack') - count(d, 'wakes_open_at_end')),
    'wakes',
    'acknowledged',
  ],
  wake_success: [
    (d) => Math.max(0, count(d, 'wakes') - count(d, 'wakes_open_at_end')),
    'wakes',
    'judged (no wake reached its acknowledgement or its timeout)',
  ],
  // A session answered early (early_replies) owes no latency: nobody waited for that answer, and it fails on its own.
  response_latency: [
    (d) => Math.max(0, count(d, 'sessions_started') - count(d, 'early_replies') - count(d, 'sessions_open_at_end')),
    'sessions started',
    'replies heard',
  ],
  session_drop_rate: [
    (d) => Math.max(0, count(d, 'wakes') - count(d, 'wakes_open_at_end') - count(d, 'sessions_open_at_end')),
    'wakes',
    'sessions ended',
  ],
  // Links lost that had to come back: not those of devices that gave up or stop by design, nor those lost too late.
  reconnect_time: [
    (d) =>
      count(d, 'connection_drops') -
      count(d, 'reconnects_unfinished') -
      count(d, 'devices_gave_up') -
      count(d, 'reconnects_abandoned'),
    'links lost with time to come back',
    'came back',
  ],
  disconnect_detect_time: [(d) => count(d, 'connection_drops'), 'links lost', 'noticed during a fault'],
  connect_success: [(d) => count(d, 'devices_started'), 'devices started', 'connect attempts finished'],
  barge_in_stop_time: [(d) => count(d, 'barge_ins'), 'barge-ins', 'measured'],
  // Every fault that ended with time to come back is reported (recovered or not): none reported is none owed.
  recovery_time: [() => 0, 'faults that ended with time to recover', 'reported'],
  // Only a session offered for resume after a cut is judged: none offered, nothing owed.
  resume_success: [() => 0, 'sessions offered for resume after a cut', 'judged'],
  // A completed session played a reply, judged when it ended: none judged at all is no data, not a pass. Replies
  // judged only inside fault windows leave nothing for the steady-state SLO to judge (n/a).
  reply_stutter: [(d) => repliesOwed(d, 'reply_stutter'), 'sessions completed', 'replies judged'],
  reply_truncated: [(d) => repliesOwed(d, 'reply_truncated'), 'sessions completed', 'replies judged'],
  playback_stall_time: [(d) => repliesOwed(d, 'playback_stall_time'), 'sessions completed', 'replies judged'],
  endpointing_latency: [
    (d) => Math.max(0, count(d, 'sessions_started') - count(d, 'early_replies')),
    'sessions started',
    'endpointed',
  ],
};

/** Why nothing was owed, where a count says more than "none happened". */
const NOT_OWED: Record<string, (d: SummaryData) => string | undefined> = {
  wake_ack_latency: (d) =>
    count(d, 'wakes_without_ack') > 0
      ? "the dialect's server acknowledges no wake (recv.ack null): the conversation starts when the wake is sent"
      : undefined,
  response_latency: (d) =>
    count(d, 'sessions_open_at_end') > 0
      ? "every session without an early answer was still open at the run's end (sessions_open_at_end)"
      : count(d, 'early_replies') > 0
        ? 'every session was answered before its speech ended (early_replies)'
        : undefined,
  session_drop_rate: (d) =>
    count(d, 'sessions_open_at_end') + count(d, 'wakes_open_at_end') > 0
      ? "every session or wake was still open at the run's end (sessions_open_at_end, wakes_open_at_end)"
      : undefined,
};

/** SLO metrics whose breach a server message the dialect does not match can explain (the conversation stalled). */
const CONVERSATION_METRICS = new Set([
  'wake_ack_latency',
  'wake_success',
  'response_latency',
  'endpointing_latency',
  'session_drop_rate',
  'reply_stutter',
  'reply_truncated',
  'playback_stall_time',
]);

/** What the CLI knows beyond k6's summary: unmatched server message types (from k6's log), the fleet's profiles. */
export interface JudgeContext {
  unmatchedTypes?: string[];
  /** The engine that ran the devices ('native' or 'k6'): names the generator's lag (generatorLagName). */
  engine?: string;
  /** The profiles the fleet ran: a breach their own behaviour explains is a firmware finding. */
  profiles?: Profile[];
  /**
   * The CLI stopped the tester past its own bound (the k6 device's memory): the server's doing when the devices saw it
   * break the protocol (a FAIL naming it), else the tester's (INVALID).
   */
  testerOverrun?: string;
  /** k6 could not end: its links' closes went unanswered past the run's end until the tester's network closed them. */
  closesUnanswered?: string;
  /**
   * Kinds of protocol violation the devices logged (k6.log). A k6 stopped by its memory guard works through what it
   * had read only after its interrupt, when k6 no longer keeps metrics: the log is then the devices' only record.
   */
  violationsLogged?: string[];
}

/**
 * How the slowest recoveries ended: slices never back within the bound, and slices the run's end cut (their time is
 * the wait until the end, a lower bound: "at least").
 */
function recoveryNote(data: SummaryData): string {
  const cut = count(data, 'recoveries_cut');
  const never = count(data, 'recoveries_failed') - cut;
  const parts = [
    ...(never > 0 ? [`${never} profile slice(s) never back`] : []),
    ...(cut > 0 ? [`${cut} profile slice(s) not back when the run ended: their time is a lower bound`] : []),
  ];
  return parts.length ? ` (${parts.join('; ')})` : '';
}

/** SLO metrics a firmware's own reconnect or liveness choices can breach on their own. */
const FIRMWARE_BOUND = new Set(['reconnect_time', 'recovery_time', 'devices_gave_up']);

/**
 * Why a profile's own behaviour breaches this SLO whatever the server does, or null. Times are compared with the
 * target: a device that waits longer than the target before it even tries cannot come back within it.
 */
export function firmwareReason(p: Profile, s: Pick<Slo, 'metric' | 'target' | 'aggregation'>): string | null {
  const base = baseMetric(s.metric);
  if (!FIRMWARE_BOUND.has(base)) return null;
  const r = p.reconnect;
  if (base === 'devices_gave_up')
    return r.max_attempts > 0 ? `gives up after ${r.max_attempts} reconnect tries (reconnect.max_attempts)` : null;
  const sec = (ms: number) => `${+(ms / 1000).toFixed(1)} s`;
  const firstWait = r.first_ms ?? (r.policy === 'fixed' || r.policy === 'exponential' ? r.base_ms : 0);
  if (firstWait >= s.target)
    return `waits ${sec(firstWait)} before it reconnects (reconnect.policy ${r.policy}, base ${sec(r.base_ms)})`;
  if (base === 'recovery_time') {
    if (r.max_attempts > 0)
      return `gives up after ${r.max_attempts} reconnect tries (reconnect.max_attempts), so it may never come back`;
    if (p.liveness.detect === 'silence' && p.liveness.timeout_ms >= s.target)
      return `notices a dead link only after ${sec(p.liveness.timeout_ms)} of silence (liveness.timeout_ms)`;
  }
  return null;
}

export interface SloResult {
  name: string;
  metric: string;
  description: string;
  /** e.g. "p(95) < 300", "rate >= 99%". */
  target: string;
  /** e.g. "312.0 ms", "97.50% (39 of 40)", "no data". */
  measured: string;
  value: number | null;
  status: SloStatus;
  /** One line: the measured value against the target, or why there is no value. */
  why: string;
  /** Top contributors of a breach: profile, close code, cause, phase. */
  culprits: string[];
}

export interface Judgement {
  verdict: Verdict;
  exit_code: number;
  /** The one line a person or a CI log reads. */
  headline: string;
  slos: SloResult[];
  /** Why the run is INVALID (the tester failed), empty otherwise. */
  invalid: string[];
  /** Why the run FAILED (breached SLOs and run-wide rules), empty on PASS. */
  failures: string[];
  /** Breaches the firmware's own behaviour explains (status 'finding'): reported, not failed. */
  findings: string[];
}

/** `metric` or `metric{a:b}` with one more tag, written the way k6 names the submetric (so both sides agree). */
export function withTag(metric: string, tag: string, value: string): string {
  const i = metric.indexOf('{');
  return i < 0 ? `${metric}{${tag}:${value}}` : `${metric.slice(0, -1)},${tag}:${value}}`;
}

export function baseMetric(metric: string): string {
  const i = metric.indexOf('{');
  return i < 0 ? metric : metric.slice(0, i);
}

function count(data: SummaryData, name: string): number {
  return data.metrics[name]?.values.count ?? 0;
}

function samples(m: MetricSummary | undefined): number {
  if (!m) return 0;
  if (m.type === 'rate') return (m.values.passes ?? 0) + (m.values.fails ?? 0);
  if (m.type === 'trend') return m.values.count ?? 0;
  if (m.type === 'counter') return m.values.count ?? 0;
  return 1;
}

/** The SLO's aggregate of a metric summary; null when the metric has no sample (a counter with none counts 0). */
export function aggregateOf(m: MetricSummary | undefined, s: Pick<Slo, 'aggregation'>): number | null {
  if (s.aggregation === 'count') return m?.values.count ?? 0;
  if (!m || samples(m) === 0) return null;
  const v = m.values[s.aggregation === 'rate' ? 'rate' : s.aggregation];
  return typeof v === 'number' ? v : null;
}

function meets(v: number, s: Pick<Slo, 'op' | 'target'>): boolean {
  switch (s.op) {
    case '<':
      return v < s.target;
    case '<=':
      return v <= s.target;
    case '>':
      return v > s.target;
    case '>=':
      return v >= s.target;
    default:
      return v === s.target;
  }
}

const pct = (x: number) => `${(x * 100).toFixed(2).replace(/\.?0+$/, '')}%`;

function targetText(s: Slo): string {
  return `${s.aggregation} ${s.op} ${s.aggregation === 'rate' ? pct(s.target) : s.aggregation === 'count' ? s.target : `${s.target} ms`}`;
}

function valueText(v: number | null, s: Slo, m: MetricSummary | undefined): string {
  if (v === null) return 'no data';
  if (s.aggregation === 'rate') return `${pct(v)} (${m?.values.passes ?? 0} of ${samples(m)})`;
  if (s.aggregation === 'count') return String(v);
  return `${v.toFixed(1)} ms`;
}

/** Worse-first order: for '<' targets a higher value is worse; for '>' a lower one. */
function worseFirst(s: Slo): (a: number, b: number) => number {
  return s.op.startsWith('>') ? (a, b) => a - b : (a, b) => b - a;
}

/** The submetrics `metric{…,tag:value}` the run declared, by value. */
function byTag(data: SummaryData, metric: string, tag: string): { value: string; m: MetricSummary }[] {
  const prefix = withTag(metric, tag, '').slice(0, -1);
  const out: { value: string; m: MetricSummary }[] = [];
  for (const [name, m] of Object.entries(data.metrics)) {
    if (!name.startsWith(prefix) || !name.endsWith('}')) continue;
    const value = name.slice(prefix.length, -1);
    if (value && !value.includes(',')) out.push({ value, m });
  }
  return out;
}

/**
 * Upgrades refused with an HTTP status, as `http_<status>` tallies, from k6's own ws_sessions samples: the k6 device's
 * socket is only told "bad handshake", but k6 tags each session with the status it got (kit.ts declares them). The
 * native engine tags connect_success itself and opens no k6 session to a server: empty then.
 */
function k6RefusedUpgrades(data: SummaryData): { value: string; n: number }[] {
  return byTag(data, 'ws_sessions', 'status')
    .map((x) => ({ value: `http_${x.value}`, n: x.m.values.count ?? 0 }))
    .filter((x) => x.n > 0 && x.value !== 'http_101')
    .sort((a, b) => b.n - a.n);
}

/** How many failures a submetric holds: fails of a rate, the count of a counter. */
function failuresIn(m: MetricSummary): number {
  return m.type === 'rate' ? (m.values.fails ?? 0) : (m.values.count ?? 0);
}

/** The top contributors to a breached SLO, from the per-profile, per-code and per-cause submetrics the run declared. */
function culpritsOf(data: SummaryData, s: Slo, ctx: JudgeContext = {}): string[] {
  const out: string[] = [];
  const base = baseMetric(s.metric);
  // A message the dialect does not match leaves the conversation waiting: say so first, it is the likeliest cause.
  const unmatched = count(data, 'unmatched_messages');
  if (unmatched > 0 && CONVERSATION_METRICS.has(base)) {
    const types = ctx.unmatchedTypes?.length
      ? ` (${ctx.unmatchedTypes
          .slice(0, 5)
          .map((t) => `\`${t}\``)
          .join(', ')})`
      : '';
    out.push(
      `the server sent ${unmatched} message(s)${types} that the dialect does not match: a typo in the dialect, or a server speaking another protocol`,
    );
  }
  // Which fault the fleet was slowest to come back from.
  if (base === 'recovery_time') {
    const faults = byTag(data, s.metric, 'fault')
      .map((f) => ({ name: f.value, v: aggregateOf(f.m, s) }))
      .filter((f): f is { name: string; v: number } => f.v !== null)
      .sort((a, b) => b.v - a.v);
    if (faults.length)
      out.push(
        `fault ${faults
          .slice(0, 3)
          .map((f) => `${f.name} ${(f.v / 1000).toFixed(1)} s`)
          .join(', ')}${recoveryNote(data)}`,
      );
  }
  // Where the user's wait went: the server's endpointing, and the rest.
  if (base === 'early_replies') {
    const at = data.metrics.early_reply_speech?.values['p(50)'];
    if (typeof at === 'number')
      out.push(
        `the server answered before the user finished speaking: a median ${at.toFixed(0)}% into the utterance's speech (the server, not the network: its endpointing or its answer to the wake itself)`,
      );
  }
  if (base === 'response_latency') {
    const p = (m: string) => data.metrics[m]?.values['p(95)'];
    const ep = p('endpointing_latency');
    const rest = p('processing_latency');
    if (typeof ep === 'number' && typeof rest === 'number') {
      out.push(
        `endpointing p95 ${ep.toFixed(0)} ms (end of speech to the server's first sign it heard it), the rest p95 ${rest.toFixed(0)} ms`,
      );
    }
  }
  // Profiles: each profile's own value of the SLO; those that breach on their own, worst first.
  const profiles = byTag(data, s.metric, 'profile')
    .map((p) => ({ name: p.value, m: p.m, v: aggregateOf(p.m, s) }))
    .filter(
      (p): p is { name: string; m: MetricSummary; v: number } => p.v !== null && (s.aggregation !== 'count' || p.v > 0),
    );
  if (profiles.length) {
    const order = worseFirst(s);
    const bad = profiles.filter((p) => !meets(p.v, s)).sort((a, b) => order(a.v, b.v));
    const shown = (bad.length ? bad : profiles.sort((a, b) => order(a.v, b.v))).slice(0, 3);
    const tail = bad.length
      ? `${bad.length} of ${profiles.length} profiles breach on their own`
      : `no single profile breaches on its own`;
    out.push(
      `profile ${shown.map((p) => `${p.name} ${valueText(p.v, s, p.m)}`).join(', ')}${profiles.length > 1 ? ` (${tail})` : ''}`,
    );
  }
  // Close codes and causes of failed connects and unplanned drops.
  const tally = (tag: string) =>
    byTag(data, s.metric, tag)
      .map((x) => ({ v: x.value, n: failuresIn(x.m) }))
      .filter((x) => x.n > 0)
      .sort((a, b) => b.n - a.n);
  const kinds = tally('kind');
  if (kinds.length) out.push(`kind ${kinds.map((k) => `${k.v} ×${k.n}`).join(', ')}`);
  const codes = tally('code');
  const codeName = (v: string) =>
    CLOSE_CODE_NAMES[v] ??
    CLOSE_CODE_RANGES[v] ??
    (v.startsWith('http_') ? `HTTP ${v.slice(5)}: the upgrade or the provision call refused` : undefined);
  const refused = base === 'connect_success' ? k6RefusedUpgrades(data) : [];
  if (refused.length)
    out.push(`upgrade refused ${refused.map((r) => `${r.value} (HTTP ${r.value.slice(5)}) ×${r.n}`).join(', ')}`);
  if (codes.length)
    out.push(
      `close code ${codes
        .slice(0, 3)
        .map((c) => `${c.v}${codeName(c.v) ? ` (${codeName(c.v)})` : ''} ×${c.n}`)
        .join(', ')}`,
    );
  const causes = tally('cause');
  if (causes.length) {
    const top = causes[0]!;
    out.push(
      `phase ${CAUSES[top.v]?.phase ?? PHASE[base] ?? '?'}: ${CAUSES[top.v]?.look ?? top.v} (×${top.n}${
        causes.length > 1
          ? `; also ${causes
              .slice(1)
              .map((c) => `${c.v} ×${c.n}`)
              .join(', ')}`
          : ''
      })`,
    );
    return out;
  }
  // Dropped sessions by the reason they ended (sessions_dropped{reason:…}): lost with the link, interrupted, timed out.
  const reasons = (
    base === 'session_drop_rate' ? byTag(data, 'sessions_dropped', 'reason') : byTag(data, s.metric, 'reason')
  )
    .map((x) => ({ v: x.value, n: failuresIn(x.m) }))
    .filter((x) => x.n > 0)
    .sort((a, b) => b.n - a.n);
  if (reasons.length) out.push(`sessions ended ${reasons.map((r) => `${r.v} ×${r.n}`).join(', ')}`);
  if (PHASE[base]) out.push(`phase ${PHASE[base]}`);
  return out;
}

/** Judges one SLO: measured and met, breached, no data although it was owed (a breach), or not applicable. */
export function judgeSlo(data: SummaryData, s: Slo, ctx: JudgeContext = {}): SloResult {
  const m = data.metrics[s.metric];
  const v = aggregateOf(m, s);
  const r: SloResult = {
    name: s.name,
    metric: s.metric,
    description: s.description,
    target: targetText(s),
    measured: valueText(v, s, m),
    value: v,
    status: 'pass',
    why: '',
    culprits: [],
  };
  if (v === null) {
    // A phase of a chaos run with no sample while the run had some in other phases: nothing of it to judge here.
    if (/[{,]chaos:/.test(s.metric) && samples(data.metrics[baseMetric(s.metric)]) > 0) {
      r.status = 'n/a';
      r.why = `${s.metric}: n/a, every sample fell in another phase of the chaos run`;
      return r;
    }
    const pre = PRECONDITION[baseMetric(s.metric)];
    const owed = pre ? Math.max(0, pre[0](data)) : null;
    if (owed === 0) {
      r.status = 'n/a';
      r.why = `${s.metric}: n/a, ${NOT_OWED[baseMetric(s.metric)]?.(data) ?? `no ${pre![1]} in this run`}`;
    } else {
      r.status = 'fail';
      r.why = pre
        ? `${s.metric}: ${owed} ${pre[1]}, 0 ${pre[2]}`
        : `${s.metric}: no sample although the SLO asks for one (no data is not a pass)`;
      r.culprits = culpritsOf(data, s, ctx);
    }
    return r;
  }
  if (meets(v, s)) {
    r.why = `${s.metric} ${r.measured} meets ${r.target}`;
    return r;
  }
  r.status = 'fail';
  r.why = `${s.metric} measured ${r.measured}, target ${r.target}`;
  r.culprits = culpritsOf(data, s, ctx);
  const firmware = firmwareFinding(data, s, ctx);
  if (firmware) {
    r.status = 'finding';
    r.culprits = [firmware, ...r.culprits];
  }
  return r;
}

/**
 * The per-firmware comparison under faults: a profile whose reconnects that spanned a fault miss the reconnect target
 * because of its own behaviour (a fixed backoff longer than the target, say). Reported as findings, never failures:
 * what the server owes after a fault is judged by recovery_max.
 */
function faultFindings(data: SummaryData, slos: Slo[], ctx: JudgeContext): string[] {
  if (!ctx.profiles?.length) return [];
  const out: string[] = [];
  for (const s of slos) {
    if (baseMetric(s.metric) !== 'reconnect_time' || s.name.includes('@')) continue;
    for (const p of ctx.profiles) {
      let worst: number | null = null;
      for (const phase of ['during', 'recovery']) {
        const v = aggregateOf(data.metrics[`reconnect_time{chaos:${phase},profile:${p.name}}`], s);
        if (v !== null && (worst === null || v > worst)) worst = v;
      }
      if (worst === null || meets(worst, s)) continue;
      const why = firmwareReason(p, s);
      if (why)
        out.push(
          `under faults, ${p.name} reconnects in ${s.aggregation} ${(worst / 1000).toFixed(1)} s, over ${s.name}'s ${s.target / 1000} s: it ${why}`,
        );
    }
  }
  return out;
}

/**
 * A breach is the firmware's when every profile that breaches on its own is explained by its own behaviour
 * (firmwareReason) and the other profiles, at least one, meet the target: the server did what it owed the rest.
 */
function firmwareFinding(data: SummaryData, s: Slo, ctx: JudgeContext): string | null {
  if (!ctx.profiles?.length || !FIRMWARE_BOUND.has(baseMetric(s.metric))) return null;
  const byName = new Map(ctx.profiles.map((p) => [p.name, p]));
  const rows = byTag(data, s.metric, 'profile').map((p) => ({ name: p.value, v: aggregateOf(p.m, s) }));
  const breaching = rows.filter((p) => p.v !== null && !meets(p.v, s));
  if (!breaching.length) return null;
  const reasons: string[] = [];
  for (const b of breaching) {
    const p = byName.get(b.name);
    const why = p ? firmwareReason(p, s) : null;
    if (!why) return null;
    reasons.push(`${b.name} ${why}`);
  }
  // The server must have shown it can: the rest of the fleet met the target. A fleet of only such firmware is judged
  // as any other (its breach may be the server's too).
  const others = rows.filter((p) => p.v !== null && meets(p.v, s)).map((p) => p.name);
  if (!others.length) return null;
  return `the firmware, not the server: ${reasons.join('; ')}; the server met the target for ${others.join(', ')}`;
}

/**
 * What vu_loop_lag measured, by the engine that ran the devices: the native engine reports its own timers' lag (its
 * devices' clock), the k6 device each VU's 1 s probe (the VU's event loop). The verdict names the one that lagged.
 */
export function generatorLagName(engine: string | undefined): string {
  return engine === 'native' ? 'device-engine timer lag' : 'VU event-loop lag';
}

/** The generator's own lag and uplink pacing, as a summary or k6's live API gives them. */
export interface GeneratorHealth {
  /** The engine that ran the devices (run.json parameters.engine): names the lag. */
  engine?: string;
  /** vu_loop_lag's trend values (p(50), p(95), p(99), max, count), if any were recorded. */
  lag?: Record<string, number | undefined>;
  slips: number;
  frames: number;
}

/**
 * Why the generator's numbers are its own and not the server's: INVALID reasons, empty when it kept up. The run's
 * verdict and the live watch during a run (scripts/tester-watch.ts) read the same bounds.
 */
export function generatorSaturation(h: GeneratorHealth): string[] {
  const out: string[] = [];
  const lag = h.lag;
  const ms = (k: string) => (lag?.[k] ?? 0).toFixed(0);
  const name = generatorLagName(h.engine);
  if (lag && (lag.count ?? 0) > 0) {
    if ((lag['p(95)'] ?? 0) > SATURATION.vuLoopLagP95Ms)
      out.push(
        `generator saturated: ${name} p95 ${ms('p(95)')} ms > bound ${SATURATION.vuLoopLagP95Ms} ms (p50 ${(lag['p(50)'] ?? lag.med ?? 0).toFixed(0)} ms)`,
      );
    else if ((lag.max ?? 0) > SATURATION.vuLoopLagMaxMs)
      out.push(
        `generator stalled: ${name} max ${ms('max')} ms > bound ${SATURATION.vuLoopLagMaxMs} ms (p99 ${ms('p(99)')} ms)`,
      );
    else if ((lag['p(99)'] ?? 0) > SATURATION.vuLoopLagP99Ms)
      out.push(
        `generator saturated: ${name} p99 ${ms('p(99)')} ms > bound ${SATURATION.vuLoopLagP99Ms} ms (p95 ${ms('p(95)')} ms)`,
      );
  }
  const { slips, frames } = h;
  if (slips >= SATURATION.minAudioSlips && slips > SATURATION.audioSlipShare * Math.max(frames, 1)) {
    out.push(
      `generator saturated: ${slips} of ${frames} uplink audio frames sent late (${pct(slips / Math.max(frames, 1))} > bound ${pct(SATURATION.audioSlipShare)})`,
    );
  }
  return out;
}

/** What the generator's own metrics say about its health: INVALID reasons, empty when it kept up. */
function testerFaults(data: SummaryData, engine: string | undefined): string[] {
  const out = generatorSaturation({
    engine,
    lag: data.metrics.vu_loop_lag?.values,
    slips: count(data, 'audio_slips'),
    frames: count(data, 'audio_frames'),
  });
  const chaosErrors = count(data, 'chaos_errors');
  if (chaosErrors > 0)
    out.push(`${chaosErrors} fault onset(s) or end(s) could not be applied through Toxiproxy or the control API`);
  if (count(data, 'devices_started') === 0) out.push('no device started: the fleet never ran');
  return out;
}

/**
 * The verdict: INVALID when the tester failed (its own metrics, or `extraInvalid` from the CLI), else FAIL when any
 * SLO breached or no device ever connected, else PASS. n/a SLOs never make a pass on their own: a run where every SLO
 * is n/a fails.
 */
export function judge(
  data: SummaryData | null,
  slos: Slo[],
  extraInvalid: string[] = [],
  ctx: JudgeContext = {},
): Judgement {
  const invalid = [...extraInvalid];
  if (!data) {
    if (!invalid.length) invalid.push('k6 wrote no summary');
    return finish('invalid', [], invalid, []);
  }
  const own = testerFaults(data, ctx.engine);
  // A generator overwhelmed by what the server sent (a flood, huge frames: protocol violations) is the server's
  // failure, not the tester's: the run FAILs, saying so. INVALID stays for what the tester could not do by itself.
  const violations = count(data, 'protocol_violations');
  const overwhelmed =
    violations > 0 &&
    own.length > 0 &&
    own.every((r) => r.startsWith('generator saturated') || r.startsWith('generator stalled'));
  if (!overwhelmed) invalid.push(...own);
  const logged = ctx.violationsLogged ?? [];
  if (ctx.testerOverrun && violations === 0 && !logged.length) invalid.push(ctx.testerOverrun);
  const rows = slos.map((s) => judgeSlo(data, s, ctx));
  const failures = rows.filter((r) => r.status === 'fail').map((r) => [r.why, ...r.culprits].join('; '));
  if (overwhelmed)
    failures.push(`the server overwhelmed the tester with ${violations} protocol violation(s): ${own.join('; ')}`);
  if (ctx.testerOverrun && violations > 0)
    failures.push(`the server overwhelmed the tester with ${violations} protocol violation(s): ${ctx.testerOverrun}`);
  else if (ctx.testerOverrun && logged.length)
    failures.push(
      `the server overwhelmed the tester with protocol violations the devices logged as k6 stopped (${logged.join(', ')}): ${ctx.testerOverrun}`,
    );
  if (ctx.closesUnanswered) failures.push(ctx.closesUnanswered);
  const findings = [
    ...rows.filter((r) => r.status === 'finding').map((r) => `${r.name}: ${[r.why, ...r.culprits].join('; ')}`),
    ...faultFindings(data, slos, ctx),
  ];
  const started = count(data, 'devices_started');
  const connected = data.metrics.connect_success?.values.passes ?? 0;
  // Every connect refused for its credentials: the tester was set up wrong, the server was not measured.
  const tagged = byTag(data, 'connect_success{chaos:steady}', 'code')
    .map((x) => ({ value: x.value, n: failuresIn(x.m) }))
    .filter((x) => x.n > 0);
  // The k6 device's refusals are all 1006 on connect_success: k6's own handshake record says their status.
  const k6Refused = k6RefusedUpgrades(data);
  const refusedFor = k6Refused.length ? k6Refused : tagged;
  if (
    connected === 0 &&
    refusedFor.length > 0 &&
    refusedFor.every((x) => CREDENTIAL_REFUSALS.has(x.value)) &&
    refusedFor.reduce((n, x) => n + x.n, 0) === (data.metrics.connect_success?.values.fails ?? -1)
  )
    invalid.push(
      `the server refused the devices' credentials on every connect (${refusedFor.map((x) => `HTTP ${x.value.slice(5)} ×${x.n}`).join(', ')}): check --token / --token-file and the dialect's connect; the server was not measured`,
    );
  if (started > 0 && connected === 0)
    failures.push(
      `no device ever connected: ${data.metrics.connect_success?.values.fails ?? 0} connect attempts failed`,
    );
  if (!rows.some((r) => r.status === 'pass') && !failures.length)
    failures.push('no SLO could be judged (every one n/a): nothing was seen to work');
  return finish(invalid.length ? 'invalid' : failures.length ? 'fail' : 'pass', rows, invalid, failures, findings);
}

function finish(
  verdict: Verdict,
  rows: SloResult[],
  invalid: string[],
  failures: string[],
  findings: string[] = [],
): Judgement {
  let headline: string;
  if (verdict === 'invalid')
    headline = `VERDICT: INVALID (the tester failed, its numbers do not judge the server): ${invalid.join('; ')}`;
  else if (verdict === 'fail') {
    const breached = rows.filter((r) => r.status === 'fail');
    headline = `VERDICT: FAIL (${breached.length ? breached.map((r) => r.name).join(', ') : 'no device connected'}): ${failures.join(' | ')}`;
  } else {
    const na = rows.filter((r) => r.status === 'n/a').length;
    const fw = findings.length ? `, ${findings.length} firmware finding${findings.length > 1 ? 's' : ''}` : '';
    // Met is what passed: findings (of SLO rows or about the firmware under faults) are counted apart, never as met.
    const met = rows.filter((r) => r.status === 'pass').length;
    headline = `VERDICT: PASS (${met} SLOs met${fw}${na ? `, ${na} n/a` : ''})`;
  }
  return {
    verdict,
    exit_code: VERDICT_EXIT[verdict],
    headline,
    slos: rows,
    invalid,
    failures: verdict === 'fail' ? failures : [],
    findings,
  };
}

function xml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/**
 * JUnit for CI: one test case per SLO (a breach is a <failure> with the value, target and culprits; n/a is <skipped>),
 * plus a `tester` case that is an <error> when the run is INVALID (and then no SLO case claims a pass).
 */
export function junitXml(j: Judgement, suite: string, seconds: number): string {
  const cls = `wakestorm.${xml(suite)}`;
  const cases: string[] = [];
  const invalid = j.verdict === 'invalid';
  const tc = (name: string, body?: string) =>
    body
      ? `    <testcase classname="${cls}" name="${xml(name)}">\n      ${body}\n    </testcase>`
      : `    <testcase classname="${cls}" name="${xml(name)}"/>`;
  const tester = 'tester (generator, Toxiproxy, k6, chaos driver)';
  cases.push(invalid ? tc(tester, `<error message="${xml(j.invalid.join('; '))}"/>`) : tc(tester));
  for (const r of j.slos) {
    const name = `${r.name} (${r.metric} ${r.target})`;
    if (invalid) cases.push(tc(name, `<skipped message="${xml('not judged: the run is INVALID')}"/>`));
    else if (r.status === 'pass') cases.push(tc(name));
    else if (r.status === 'finding')
      cases.push(tc(name, `<system-out>${xml(`finding: ${[r.why, ...r.culprits].join('; ')}`)}</system-out>`));
    else if (r.status === 'n/a') cases.push(tc(name, `<skipped message="${xml(r.why)}"/>`));
    else cases.push(tc(name, `<failure message="${xml([r.why, ...r.culprits].join('; '))}"/>`));
  }
  // Every finding where CI reads: one case holding them all (a finding is not a failure of the server).
  if (!invalid && j.findings.length)
    cases.push(
      tc('firmware findings', `<system-out>${xml(j.findings.map((f) => `finding: ${f}`).join('\n'))}</system-out>`),
    );
  const extra = j.verdict === 'fail' && !j.slos.some((r) => r.status === 'fail');
  if (extra) cases.push(tc('fleet connected', `<failure message="${xml(j.failures.join('; '))}"/>`));
  const tests = cases.length;
  const failures = j.slos.filter((r) => r.status === 'fail' && !invalid).length + (extra ? 1 : 0);
  const skipped = invalid ? j.slos.length : j.slos.filter((r) => r.status === 'n/a').length;
  const errors = invalid ? 1 : 0;
  const secs = seconds.toFixed(3);
  const attrs = `tests="${tests}" failures="${failures}" errors="${errors}" skipped="${skipped}" time="${secs}"`;
  return `<?xml version="1.0" encoding="UTF-8"?>\n<testsuites ${attrs}>\n  <testsuite name="${cls}" ${attrs}>\n${cases.join('\n')}\n  </testsuite>\n</testsuites>\n`;
}

/** The SLO table and verdict lines, for the console and `wakestorm report`. */
export function verdictLines(j: Judgement): string[] {
  const lines: string[] = [];
  if (j.slos.length) {
    lines.push(`  ${'SLO'.padEnd(20)} ${'target'.padEnd(20)} ${'measured'.padEnd(22)} status`);
    for (const r of j.slos) {
      lines.push(`  ${r.name.padEnd(20)} ${r.target.padEnd(20)} ${r.measured.padEnd(22)} ${r.status.toUpperCase()}`);
      if (r.status === 'fail' || r.status === 'finding')
        for (const c of [r.why, ...r.culprits]) lines.push(`      ${c}`);
    }
    lines.push('');
  }
  // Every finding, not only those of an SLO row (a firmware's reconnects under faults are findings of no row).
  if (j.findings.length) {
    lines.push(`  Findings about the firmware, not failures of the server (${j.findings.length}):`);
    for (const f of j.findings) lines.push(`    - ${f}`);
    lines.push('');
  }
  lines.push(j.headline);
  return lines;
}
