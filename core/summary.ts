// handleSummary for every scenario: a verdict table on stdout, and summary.json, junit.xml and events.json.
// k6's own textSummary and jUnit helpers live on a CDN this project cannot reach, so they are written here.

import type { EventsFile, PlannedEvent } from './chaos-events.ts';
import type { Slo } from './slo.ts';
import type { Profile } from './profiles.ts';
import { judge, junitXml, verdictLines, type JudgeContext } from './verdict.ts';
import type { MetricSummary, SummaryData } from './k6-summary.ts';

/** The trend stats every scenario reports (p50 and p99 are what fidelity checks compare). */
export const TREND_STATS = ['avg', 'min', 'med', 'max', 'p(50)', 'p(90)', 'p(95)', 'p(99)', 'count'];

const DEVICE_ORDER = [
  'devices_connected',
  'wake_ack_latency',
  'response_latency',
  'endpointing_latency',
  'processing_latency',
  'reconnect_time',
  'disconnect_detect_time',
  'ping_rtt',
  'wakes',
  'sessions_started',
  'sessions_completed',
  'sessions_resumed',
  'sessions_dropped',
  'follow_ups',
  'session_drop_rate',
  'reply_stutter',
  'playback_stall_time',
  'reply_truncated',
  'unmatched_messages',
  'connect_success',
  'wake_success',
  'unplanned_drops',
  'connection_drops',
  'reconnect_attempts',
  'flaps',
  'devices_gave_up',
  'playback_underruns',
  'audio_slips',
  'audio_frames',
  'vu_loop_lag',
  'tester_retries',
  'protocol_errors',
  'chaos_events',
  'chaos_errors',
];

function fmt(m: MetricSummary): string {
  const v = m.values;
  const ms = (x: number | undefined) =>
    x === undefined ? '-' : x >= 1000 ? `${(x / 1000).toFixed(2)}s` : `${x.toFixed(1)}ms`;
  if (m.type === 'trend')
    return `p50=${ms(v['p(50)'] ?? v.med)} p95=${ms(v['p(95)'])} p99=${ms(v['p(99)'])} max=${ms(v.max)} n=${v.count ?? '-'}`;
  if (m.type === 'rate')
    return `${((v.rate ?? 0) * 100).toFixed(2)}% (${v.passes ?? 0} of ${(v.passes ?? 0) + (v.fails ?? 0)})`;
  if (m.type === 'gauge') return `last=${v.value} min=${v.min} max=${v.max}`;
  return `${v.count}`;
}

/**
 * The metrics table and, unless the CLI judges the run itself (VERDICT=cli: it also sees processes, interrupts and
 * k6's exit code), the SLO table and verdict from what k6 saw.
 */
export function textSummary(
  data: SummaryData,
  slos: Slo[],
  title: string,
  extra: string[] = [],
  withVerdict = true,
  ctx: JudgeContext = {},
): string {
  const lines: string[] = ['', `wakestorm ${title} — device metrics`];
  // The fleet's connected total (devices_connected is a per-VU gauge: its last value is one VU's count).
  const m = data.metrics;
  const started = m.devices_started?.values.count ?? 0;
  const up = (m.links_up?.values.count ?? 0) - (m.links_down?.values.count ?? 0);
  if (started) lines.push(`  ${'devices connected at the end'.padEnd(48)} ${up} of ${started}`);
  const names = Object.keys(data.metrics).filter((n) => !n.startsWith('devices_connected'));
  const ordered = [
    ...DEVICE_ORDER.filter((n) => names.includes(n)),
    ...names
      .filter((n) => n.includes('{') && DEVICE_ORDER.some((d) => n.startsWith(`${d}{`)) && !n.includes('storm_q:'))
      .sort(),
  ];
  const empty = (m: MetricSummary) => (m.type === 'rate' ? !(m.values.passes || m.values.fails) : !m.values.count);
  for (const n of ordered)
    if (!(n.includes('{') && empty(data.metrics[n]!))) lines.push(`  ${n.padEnd(48)} ${fmt(data.metrics[n]!)}`);
  if (extra.length) lines.push('', ...extra.map((l) => `  ${l}`));
  if (withVerdict) lines.push('', ...verdictLines(judge(data, slos, [], ctx)));
  return `${lines.join('\n')}\n`;
}

/**
 * The files a run leaves. k6 cannot create directories, so with RESULTS_DIR (which the CLI creates) they go
 * inside it; without, they go flat into results/ as <scenario>-<timestamp>.<file>.
 * k6 writes the returned files only after handleSummary returns: all of them, or none if it throws.
 */
export function summaryOutputs(
  data: SummaryData,
  env: Record<string, string | undefined>,
  scenario: string,
  slos: Slo[],
  events: PlannedEvent[],
  extra: string[] = [],
  resolved: { profiles?: Profile[] } | null = null,
): Record<string, string> {
  const byCli = env.VERDICT === 'cli';
  const ctx: JudgeContext = { profiles: resolved?.profiles };
  const out: Record<string, string> = {
    stdout: env.SUMMARY_TABLE === 'off' ? '' : textSummary(data, slos, scenario, extra, !byCli, ctx),
  };
  const dir = env.RESULTS_DIR?.replace(/\/+$/, '');
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const path = (f: string) => (dir ? `${dir}/${f}` : `results/${scenario}-${stamp}.${f}`);
  if (env.NO_RESULTS !== '1') {
    out[path('summary.json')] = JSON.stringify(data, null, 1);
    out[path('junit.xml')] = junitXml(
      judge(data, slos, [], ctx),
      scenario,
      (data.state?.testRunDurationMs ?? 0) / 1000,
    );
    // One shape whoever writes it; `applied` is filled in by the CLI, which saw them happen.
    const file: EventsFile = { planned: events, applied: null };
    out[path('events.json')] = JSON.stringify(file, null, 1);
    if (resolved) out[path('scenario.json')] = JSON.stringify(resolved, null, 1);
  }
  if (env.SUMMARY_JSON) out[env.SUMMARY_JSON] = JSON.stringify(data);
  return out;
}
