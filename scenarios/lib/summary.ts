// handleSummary for every scenario: a verdict table on stdout, and summary.json, junit.xml and events.json.
// k6's own textSummary and jUnit helpers live on a CDN this project cannot reach, so they are written here.

import { thresholdExpr, type Slo } from './slo.ts';

interface MetricSummary {
  type: string;
  contains?: string;
  values: Record<string, number>;
  thresholds?: Record<string, { ok: boolean }>;
}
export interface SummaryData {
  metrics: Record<string, MetricSummary>;
  state?: { testRunDurationMs?: number; isStdOutTTY?: boolean };
  setup_data?: unknown;
}

/** The trend stats every scenario reports (p50 and p99 are what fidelity checks compare). */
export const TREND_STATS = ['avg', 'min', 'med', 'max', 'p(50)', 'p(90)', 'p(95)', 'p(99)', 'count'];

const DEVICE_ORDER = [
  'devices_connected',
  'wake_ack_latency',
  'response_latency',
  'reconnect_time',
  'disconnect_detect_time',
  'ping_rtt',
  'wakes',
  'sessions_started',
  'sessions_completed',
  'sessions_resumed',
  'sessions_dropped',
  'session_drop_rate',
  'connect_success',
  'connection_drops',
  'reconnect_attempts',
  'flaps',
  'devices_gave_up',
  'playback_underruns',
  'audio_slips',
  'vu_loop_lag',
  'protocol_errors',
  'chaos_events',
  'chaos_errors',
];

function fmt(m: MetricSummary): string {
  const v = m.values;
  const ms = (x: number | undefined) => (x === undefined ? '-' : x >= 1000 ? `${(x / 1000).toFixed(2)}s` : `${x.toFixed(1)}ms`);
  if (m.type === 'trend') return `p50=${ms(v['p(50)'] ?? v.med)} p95=${ms(v['p(95)'])} p99=${ms(v['p(99)'])} max=${ms(v.max)} n=${v.count ?? '-'}`;
  if (m.type === 'rate') return `${((v.rate ?? 0) * 100).toFixed(2)}% (${v.passes ?? 0} of ${(v.passes ?? 0) + (v.fails ?? 0)})`;
  if (m.type === 'gauge') return `last=${v.value} min=${v.min} max=${v.max}`;
  return `${v.count}`;
}

/** One row per SLO: target, measured, pass or fail. An SLO whose metric saw no sample has no data and passes. */
export interface SloRow {
  name: string;
  metric: string;
  target: string;
  measured: string;
  measuredValue: number | null;
  ok: boolean;
}

function measuredOf(m: MetricSummary | undefined, s: Slo): number | null {
  if (!m || (m.type === 'trend' && !m.values.count)) return null;
  if (m.type === 'rate' && !(m.values.passes || m.values.fails)) return null;
  const key = s.aggregation === 'count' ? 'count' : s.aggregation === 'rate' ? 'rate' : s.aggregation;
  const v = m.values[key];
  return typeof v === 'number' ? v : null;
}

function show(v: number | null, s: Slo): string {
  if (v === null) return 'no data';
  if (s.aggregation === 'rate') return `${(v * 100).toFixed(2)}%`;
  if (s.aggregation === 'count') return String(v);
  return `${v.toFixed(1)} ms`;
}

export function sloRows(data: SummaryData, slos: Slo[]): SloRow[] {
  return slos.map((s) => {
    const m = data.metrics[s.metric];
    const v = measuredOf(m, s);
    const th = m?.thresholds?.[thresholdExpr(s)];
    return {
      name: s.name,
      metric: s.metric,
      target: `${s.aggregation} ${s.op} ${s.aggregation === 'rate' ? `${s.target * 100}%` : s.target}`,
      measured: show(v, s),
      measuredValue: v,
      ok: th ? th.ok : true,
    };
  });
}

export function textSummary(data: SummaryData, slos: Slo[], title: string, extra: string[] = []): string {
  const lines: string[] = ['', `wakestorm ${title} — device metrics`];
  const names = Object.keys(data.metrics);
  const ordered = [...DEVICE_ORDER.filter((n) => names.includes(n)), ...names.filter((n) => n.includes('{') && DEVICE_ORDER.some((d) => n.startsWith(`${d}{`)) && !n.includes('storm_s:')).sort()];
  const empty = (m: MetricSummary) => (m.type === 'rate' ? !(m.values.passes || m.values.fails) : !m.values.count);
  for (const n of ordered) if (!(n.includes('{') && empty(data.metrics[n]!))) lines.push(`  ${n.padEnd(48)} ${fmt(data.metrics[n]!)}`);
  if (extra.length) lines.push('', ...extra.map((l) => `  ${l}`));
  const rows = sloRows(data, slos);
  if (rows.length) {
    lines.push('', `  ${'SLO'.padEnd(20)} ${'target'.padEnd(20)} ${'measured'.padEnd(14)} verdict`);
    for (const r of rows) lines.push(`  ${r.name.padEnd(20)} ${r.target.padEnd(20)} ${r.measured.padEnd(14)} ${r.ok ? 'PASS' : 'FAIL'}`);
    const failed = rows.filter((r) => !r.ok);
    lines.push('', failed.length ? `VERDICT: FAIL (${failed.map((r) => r.name).join(', ')} breached)` : `VERDICT: PASS (${rows.length} SLOs)`);
  }
  return `${lines.join('\n')}\n`;
}

function xml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** One JUnit test case per SLO, the measured value in the failure message, so CI shows which SLO broke. */
export function junitXml(data: SummaryData, slos: Slo[], suite: string): string {
  const rows = sloRows(data, slos);
  const failures = rows.filter((r) => !r.ok).length;
  const secs = ((data.state?.testRunDurationMs ?? 0) / 1000).toFixed(3);
  const cases = rows.map((r) => {
    const name = xml(`${r.name} (${r.metric} ${r.target})`);
    return r.ok
      ? `    <testcase classname="wakestorm.${xml(suite)}" name="${name}"/>`
      : `    <testcase classname="wakestorm.${xml(suite)}" name="${name}">\n      <failure message="${xml(`${r.metric} measured ${r.measured}, target ${r.target}`)}"/>\n    </testcase>`;
  });
  return `<?xml version="1.0" encoding="UTF-8"?>\n<testsuites tests="${rows.length}" failures="${failures}" time="${secs}">\n  <testsuite name="wakestorm.${xml(suite)}" tests="${rows.length}" failures="${failures}" time="${secs}">\n${cases.join('\n')}\n  </testsuite>\n</testsuites>\n`;
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
  events: object[],
  extra: string[] = [],
): Record<string, string> {
  const out: Record<string, string> = { stdout: textSummary(data, slos, scenario, extra) };
  const dir = env.RESULTS_DIR?.replace(/\/+$/, '');
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const path = (f: string) => (dir ? `${dir}/${f}` : `results/${scenario}-${stamp}.${f}`);
  if (env.NO_RESULTS !== '1') {
    out[path('summary.json')] = JSON.stringify(data, null, 1);
    out[path('junit.xml')] = junitXml(data, slos, scenario);
    out[path('events.json')] = JSON.stringify(events, null, 1);
  }
  if (env.SUMMARY_JSON) out[env.SUMMARY_JSON] = JSON.stringify(data);
  return out;
}
