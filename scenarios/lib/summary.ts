// handleSummary for every scenario: a compact text verdict on stdout, summary.json and junit.xml where asked (-e SUMMARY_JSON, -e JUNIT_XML).
// k6's own textSummary and jUnit helpers live on a CDN this project cannot reach, so they are written here.

interface MetricSummary {
  type: string;
  contains?: string;
  values: Record<string, number>;
  thresholds?: Record<string, { ok: boolean }>;
}
export interface SummaryData {
  metrics: Record<string, MetricSummary>;
  state?: { testRunDurationMs?: number; isStdOutTTY?: boolean };
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
  'connection_drops',
  'reconnect_attempts',
  'flaps',
  'devices_gave_up',
  'playback_underruns',
  'protocol_errors',
  'chaos_events',
];

function fmt(m: MetricSummary): string {
  const v = m.values;
  const ms = (x: number | undefined) => (x === undefined ? '-' : x >= 1000 ? `${(x / 1000).toFixed(2)}s` : `${x.toFixed(1)}ms`);
  if (m.type === 'trend') return `p50=${ms(v['p(50)'] ?? v.med)} p95=${ms(v['p(95)'])} p99=${ms(v['p(99)'])} max=${ms(v.max)} n=${v.count ?? '-'}`;
  if (m.type === 'rate') return `${((v.rate ?? 0) * 100).toFixed(2)}% (${v.passes ?? 0} of ${(v.passes ?? 0) + (v.fails ?? 0)})`;
  if (m.type === 'gauge') return `last=${v.value} min=${v.min} max=${v.max}`;
  return `${v.count}`;
}

export function thresholdResults(data: SummaryData): { metric: string; threshold: string; ok: boolean; value: string }[] {
  const out: { metric: string; threshold: string; ok: boolean; value: string }[] = [];
  for (const [name, m] of Object.entries(data.metrics)) {
    for (const [th, r] of Object.entries(m.thresholds ?? {})) out.push({ metric: name, threshold: th, ok: r.ok, value: fmt(m) });
  }
  return out.sort((a, b) => a.metric.localeCompare(b.metric));
}

export function textSummary(data: SummaryData): string {
  const lines: string[] = ['', 'wakestorm — device metrics'];
  const names = Object.keys(data.metrics);
  const ordered = [...DEVICE_ORDER.filter((n) => names.includes(n)), ...names.filter((n) => n.includes('{') && DEVICE_ORDER.some((d) => n.startsWith(`${d}{`))).sort()];
  for (const n of ordered) lines.push(`  ${n.padEnd(44)} ${fmt(data.metrics[n]!)}`);
  const ths = thresholdResults(data);
  if (ths.length) {
    lines.push('', 'SLO thresholds');
    for (const t of ths) lines.push(`  ${t.ok ? 'PASS' : 'FAIL'}  ${`${t.metric}: ${t.threshold}`.padEnd(52)} ${t.value}`);
    const failed = ths.filter((t) => !t.ok).length;
    lines.push('', failed ? `VERDICT: FAIL (${failed} of ${ths.length} thresholds breached)` : `VERDICT: PASS (${ths.length} thresholds)`);
  }
  return `${lines.join('\n')}\n`;
}

function xml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** One JUnit test case per threshold, so CI shows which SLO broke. */
export function junitXml(data: SummaryData, suite = 'wakestorm'): string {
  const ths = thresholdResults(data);
  const failures = ths.filter((t) => !t.ok).length;
  const secs = ((data.state?.testRunDurationMs ?? 0) / 1000).toFixed(3);
  const cases = ths.map((t) => {
    const name = xml(`${t.metric}: ${t.threshold}`);
    return t.ok
      ? `    <testcase classname="${xml(suite)}.slo" name="${name}"/>`
      : `    <testcase classname="${xml(suite)}.slo" name="${name}">\n      <failure message="${xml(`breached: ${t.value}`)}"/>\n    </testcase>`;
  });
  return `<?xml version="1.0" encoding="UTF-8"?>\n<testsuites tests="${ths.length}" failures="${failures}" time="${secs}">\n  <testsuite name="${xml(suite)}" tests="${ths.length}" failures="${failures}" time="${secs}">\n${cases.join('\n')}\n  </testsuite>\n</testsuites>\n`;
}

/** The scenarios' handleSummary: stdout always; files only when their paths are given. */
export function summaryOutputs(data: SummaryData, env: Record<string, string | undefined>, suite: string): Record<string, string> {
  const out: Record<string, string> = { stdout: textSummary(data) };
  if (env.SUMMARY_JSON) out[env.SUMMARY_JSON] = JSON.stringify(data, null, 1);
  if (env.JUNIT_XML) out[env.JUNIT_XML] = junitXml(data, suite);
  return out;
}
