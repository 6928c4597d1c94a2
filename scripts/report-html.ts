// report.html: wakestorm's own report of a run, one self-contained file that opens offline. The verdict and why first,
// then the SLOs, what ran, the charts with fault windows shaded, every profile side by side, and the tester's health.
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  engineOf,
  judgeContextOf,
  paramText,
  type RunRecordAsRead as RunRecord,
  type SummaryData,
} from '../core/run-contract.ts';
import { faultLabels } from '../core/timelines.ts';
import { PHASES } from '../core/phases.ts';
import { inPhase } from '../core/slo.ts';
import { aggregateOf, generatorLagName, judge, type Judgement } from '../core/verdict.ts';
import { buildRunCharts, quantile, runSeries, type Chart, type PhaseValue, type RunSeries } from './charts.ts';
import { toCsv } from './run-dir.ts';
import { changeText, comparability, compareRuns, compareValueText, worseText, type LoadedRun } from './compare.ts';

const esc = (s: unknown) =>
  String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const ms = (v: number | null | undefined) =>
  v === null || v === undefined || Number.isNaN(v)
    ? '–'
    : v >= 1000
      ? `${(v / 1000).toFixed(2)} s`
      : `${v.toFixed(0)} ms`;

interface ProfileRow {
  profile: string;
  started: number;
  connectedMax: number;
  drops: Record<string, number>;
  unplanned: number;
  reconnectP95: number | null;
  wakeAckP95: number | null;
  responseP95: number | null;
  /** The response's tail: p99 and the worst, so one slow device is seen beside the p95. */
  responseP99: number | null;
  responseMax: number | null;
  /** The server's endpointing within response_latency (end of speech to its first sign it heard it). */
  endpointingP95: number | null;
  sessions: number;
  dropRate: number | null;
  followUps: number;
  replies: number;
  stuttered: number;
  truncated: number;
}

const LATENCIES = new Set(['reconnect_time', 'wake_ack_latency', 'response_latency', 'endpointing_latency']);

/** Each profile's numbers from the run's samples (the same samples as the charts). */
function profileRows(rs: RunSeries): ProfileRow[] {
  const rows = new Map<string, ProfileRow>();
  const row = (p: string) =>
    rows.get(p) ??
    rows
      .set(p, {
        profile: p,
        started: 0,
        connectedMax: 0,
        drops: {},
        unplanned: 0,
        reconnectP95: null,
        wakeAckP95: null,
        responseP95: null,
        responseP99: null,
        responseMax: null,
        endpointingP95: null,
        sessions: 0,
        dropRate: null,
        followUps: 0,
        replies: 0,
        stuttered: 0,
        truncated: 0,
      })
      .get(p)!;
  const values = new Map<string, number[]>();
  const push = (k: string, v: number) => (values.get(k) ?? values.set(k, []).get(k)!).push(v);
  const dropped = new Map<string, number>();
  for (const s of rs.samples) {
    const p = s.tags.profile;
    if (!p) continue;
    const r = row(p);
    if (s.metric === 'devices_started') r.started += s.value;
    else if (s.metric === 'connection_drops')
      r.drops[s.tags.code ?? '?'] = (r.drops[s.tags.code ?? '?'] ?? 0) + s.value;
    else if (s.metric === 'unplanned_drops') r.unplanned += s.value;
    else if (s.metric === 'session_drop_rate') {
      r.sessions++;
      dropped.set(p, (dropped.get(p) ?? 0) + (s.value ? 1 : 0));
    } else if (s.metric === 'follow_ups') r.followUps += s.value;
    else if (s.metric === 'reply_stutter') {
      r.replies++;
      r.stuttered += s.value ? 1 : 0;
    } else if (s.metric === 'reply_truncated') r.truncated += s.value ? 1 : 0;
    else if (LATENCIES.has(s.metric)) push(`${p}\u0000${s.metric}`, s.value);
  }
  const pq = (p: string, m: string, q: number) => {
    const v = values.get(`${p}\u0000${m}`);
    return v
      ? quantile(
          v.sort((a, b) => a - b),
          q,
        )
      : null;
  };
  const p95 = (p: string, m: string) => pq(p, m, 0.95);
  const single = rows.size === 1;
  for (const r of rows.values()) {
    r.reconnectP95 = p95(r.profile, 'reconnect_time');
    r.wakeAckP95 = p95(r.profile, 'wake_ack_latency');
    r.responseP95 = p95(r.profile, 'response_latency');
    r.responseP99 = pq(r.profile, 'response_latency', 0.99);
    r.responseMax = pq(r.profile, 'response_latency', 1);
    r.endpointingP95 = p95(r.profile, 'endpointing_latency');
    r.dropRate = r.sessions ? (dropped.get(r.profile) ?? 0) / r.sessions : null;
    const key = single ? 'all devices' : r.profile;
    r.connectedMax = rs.connected.filter((c) => c.key === key).reduce((m, c) => Math.max(m, c.value), 0);
  }
  return [...rows.values()].sort((a, b) => a.profile.localeCompare(b.profile));
}

const CSS = `
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:20px 28px 60px}
h1{font-size:20px;margin:8px 0 2px}h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #dde1e7;padding-bottom:4px}
.sub{color:#5b6475;margin:0 0 14px}
#verdict{border-radius:8px;padding:14px 18px;margin:10px 0 4px;color:#fff}
#verdict.pass{background:#1e8449}#verdict.fail{background:#b03a2e}#verdict.invalid{background:#b9770e}
#verdict .word{font-size:26px;font-weight:700;letter-spacing:.5px}#verdict ul{margin:6px 0 0 18px;padding:0}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13px}
th,td{border:1px solid #dde1e7;padding:5px 8px;text-align:left;vertical-align:top}th{background:#eef1f5}
td.pass{color:#1e8449;font-weight:600}td.fail{color:#b03a2e;font-weight:700}td.na{color:#7b8494}td.finding{color:#b9770e;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}.culprit{color:#5b6475;font-size:12px}
figure{background:#fff;border:1px solid #dde1e7;border-radius:6px;margin:12px 0;padding:8px}figure svg{width:100%;height:auto}
figcaption{font-weight:600;margin-bottom:4px}dl{display:grid;grid-template-columns:220px 1fr;gap:2px 12px;background:#fff;padding:10px;border:1px solid #dde1e7}
dt{color:#5b6475}dd{margin:0;word-break:break-all}
`;

function verdictBlock(j: Judgement, run: RunRecord): string {
  const word = j.verdict.toUpperCase();
  let why: string[];
  let first: string;
  if (j.verdict === 'invalid') {
    first = `The tester failed, not necessarily the server: ${j.invalid[0] ?? ''}`;
    why = j.invalid;
  } else if (j.verdict === 'fail') {
    const breached = j.slos.filter((r) => r.status === 'fail');
    first = `The server broke ${breached.length ? breached.map((r) => r.name).join(', ') : 'the fleet: no device connected'}.`;
    // Every failure the verdict has: the breached SLOs, then what no SLO row says (closes never answered, a server
    // that overwhelmed the tester).
    why = breached.length
      ? [...breached.map((r) => [r.why, ...r.culprits].join('; ')), ...j.failures.slice(breached.length)]
      : j.failures;
  } else {
    const na = j.slos.filter((r) => r.status === 'n/a');
    first = `Every SLO that applied was measured and met${na.length ? ` (${na.map((r) => r.name).join(', ')} n/a: nothing to measure)` : ''}.`;
    // Breaches the firmware's own behaviour explains: findings about the fleet, not failures of the server.
    if (j.findings.length) first += ` Findings about the firmware, not the server: ${j.findings.length}.`;
    why = j.findings;
  }
  return `<section id="verdict" class="${j.verdict}" data-verdict="${j.verdict}"><div class="word">${word}</div><div id="verdict-why">${esc(first)}</div>${
    why.length ? `<ul>${why.map((w) => `<li>${esc(w)}</li>`).join('')}</ul>` : ''
  }${run.incomplete ? '<div>The run is incomplete.</div>' : ''}</section>`;
}

function sloTable(j: Judgement): string {
  const rows = j.slos
    .map((r) => {
      const cls = r.status === 'n/a' ? 'na' : r.status;
      return `<tr><td>${esc(r.name)}</td><td>${esc(r.description)}</td><td>${esc(r.target)}</td><td class="num">${esc(r.measured)}</td><td class="${cls}">${r.status.toUpperCase()}</td><td class="culprit">${esc([r.status === 'n/a' ? r.why : '', ...r.culprits].filter(Boolean).join('; '))}</td></tr>`;
    })
    .join('');
  return `<table id="slos"><thead><tr><th>SLO</th><th>measures</th><th>target</th><th>measured</th><th>status</th><th>culprits</th></tr></thead><tbody>${rows}</tbody></table>`;
}

/** "wakestorm (recommended, pi-assistant); xiaozhi (xiaozhi-esp32)": each dialect with the profiles that spoke it. */
function dialectLine(byProfile: Record<string, string>): string {
  const by = new Map<string, string[]>();
  for (const [profile, d] of Object.entries(byProfile)) (by.get(d) ?? by.set(d, []).get(d)!).push(profile);
  return [...by].map(([d, ps]) => `${d} (${ps.join(', ')})`).join('; ');
}

function parameters(run: RunRecord): string {
  const p = run.parameters;
  const r = run.resolved;
  const share = r ? r.profile_mix.reduce((a, x) => a + x.weight, 0) : 0;
  const items: [string, unknown][] = [
    ['command', run.command],
    ['scenario', run.scenario],
    ['devices', r?.devices ?? p.DEVICES ?? '(scenario default)'],
    ['devices per VU', r ? `${r.devices_per_vu}` : (p.DEVICES_PER_VU ?? '(default)')],
    [
      'duration, ramp',
      r
        ? `${r.duration_ms / 1000} s, connects spread over ${r.ramp_ms / 1000} s`
        : (p.DURATION ?? '(scenario default)'),
    ],
    [
      'profile mix',
      r
        ? r.profile_mix.map((x) => `${x.profile} ${Math.round((x.weight / share) * 100)}%`).join(', ')
        : (p.PROFILE ?? '(scenario default)'),
    ],
    ['dialect', r?.dialects ? dialectLine(r.dialects) : (p.DIALECT ?? '(each profile its own; wakestorm by default)')],
    ['unmatched server messages', run.unmatched_types?.length ? run.unmatched_types.join(', ') : 'none'],
    [
      'timeline',
      r
        ? `${r.timeline.name}${r.timeline.steps.length ? `: ${r.timeline.steps.map((st) => `${st.fault} at ${st.at_ms / 1000} s for ${st.for_ms / 1000} s`).join('; ')}` : ''}`
        : (p.TIMELINE ?? '(scenario default)'),
    ],
    [
      'wake schedule',
      r
        ? r.wake.mode === 'off'
          ? 'off'
          : `${r.wake.mode}${r.wake.interval_ms ? ` every ${r.wake.interval_ms / 1000} s` : ''}, first in ${r.wake.first_min_ms / 1000}-${r.wake.first_max_ms / 1000} s`
        : (p.WAKE ?? '(scenario default)'),
    ],
    ['seed', r?.seed ?? p.SEED ?? '1'],
    ['server', p.server ?? 'reference'],
    ...(p.tls_verification ? [['TLS verification', p.tls_verification] as [string, unknown]] : []),
    ['auth', p.auth ?? 'none'],
    [
      'tools',
      Object.entries(run.tools ?? {})
        .map(([k, v]) => `${k} ${v}`)
        .join(', '),
    ],
    ['git commit', run.git_commit ?? '–'],
    [
      'machine',
      Object.entries(run.machine ?? {})
        .map(([k, v]) => `${k}: ${paramText(v)}`)
        .join(', '),
    ],
    ['started / ended', `${run.started_at} / ${run.ended_at}`],
    ['run id', run.run_id],
  ];
  return `<dl id="parameters">${items.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join('')}</dl>`;
}

function profileTable(rows: ProfileRow[]): string {
  if (!rows.length) return '<p>No per-profile samples in this run.</p>';
  const body = rows
    .map((r) => {
      const drops =
        Object.entries(r.drops)
          .map(([c, n]) => `${c}×${n}`)
          .join(', ') || '0';
      return `<tr><td>${esc(r.profile)}</td><td class="num">${r.started}</td><td class="num">${r.connectedMax}</td><td>${esc(drops)}</td><td class="num">${r.unplanned}</td><td class="num">${ms(r.reconnectP95)}</td><td class="num">${ms(r.wakeAckP95)}</td><td class="num">${ms(r.responseP95)}</td><td class="num">${ms(r.responseP99)} / ${ms(r.responseMax)}</td><td class="num">${ms(r.endpointingP95)}</td><td class="num">${r.dropRate === null ? '–' : `${(r.dropRate * 100).toFixed(1)}% of ${r.sessions}`}</td><td class="num">${r.followUps}</td><td class="num">${r.replies ? `${r.stuttered} / ${r.truncated} of ${r.replies}` : '–'}</td></tr>`;
    })
    .join('');
  return `<table id="profiles"><thead><tr><th>profile</th><th>devices</th><th>connected (max)</th><th>links lost by close code</th><th>unplanned drops</th><th>reconnect p95</th><th>wake ack p95</th><th>response p95</th><th>response p99 / max</th><th>of it endpointing p95</th><th>sessions dropped</th><th>follow-ups</th><th>replies stuttered / truncated</th></tr></thead><tbody>${body}</tbody></table>`;
}

function testerBlock(summary: SummaryData | null, run: RunRecord): string {
  const m = summary?.metrics ?? {};
  const lag = m.vu_loop_lag?.values;
  const slips = m.audio_slips?.values.count ?? 0;
  const frames = m.audio_frames?.values.count ?? 0;
  const procs = Object.entries(run.processes ?? {})
    .map(
      ([name, p]) =>
        `<tr><td>${esc(name)}</td><td class="num">${p ? `${p.cpu_avg_pct.toFixed(1)}%` : '–'}</td><td class="num">${p ? `${p.cpu_max_pct.toFixed(1)}%` : '–'}</td><td class="num">${p ? `${p.rss_max_mib.toFixed(1)} MiB` : '–'}</td></tr>`,
    )
    .join('');
  return `<table id="tester-health"><tbody>
<tr><th>${esc(generatorLagName(engineOf(run)))}</th><td>${lag ? `p50 ${ms(lag['p(50)'])}, p95 ${ms(lag['p(95)'])}, p99 ${ms(lag['p(99)'])}, max ${ms(lag.max)}` : '–'}</td></tr>
<tr><th>uplink audio frames sent late</th><td>${slips} of ${frames}${frames ? ` (${((slips / frames) * 100).toFixed(2)}%)` : ''}</td></tr>
</tbody></table>${procs ? `<table id="processes" style="margin-top:8px"><thead><tr><th>process</th><th>CPU avg (% of a core)</th><th>CPU max</th><th>RSS max</th></tr></thead><tbody>${procs}</tbody></table>` : ''}`;
}

/** Each steady-state SLO's metric in each phase of a chaos run (rates in %, latencies in ms), for the phases chart. */
function phaseValues(summary: SummaryData | null, run: RunRecord): PhaseValue[] {
  if (!summary || !run.resolved?.timeline.steps.length) return [];
  const out: PhaseValue[] = [];
  for (const s of run.slos) {
    if (!s.metric.includes('chaos:steady')) continue;
    for (const phase of PHASES) {
      const v = aggregateOf(summary.metrics[inPhase(s.metric, phase)], s);
      if (v !== null)
        out.push({
          slo: `${s.name} (${s.aggregation === 'rate' ? '%' : s.aggregation === 'count' ? 'count' : 'ms'})`,
          phase,
          value: s.aggregation === 'rate' ? +(v * 100).toFixed(2) : +v.toFixed(1),
          target: s.aggregation === 'rate' ? +(s.target * 100).toFixed(2) : s.target,
        });
    }
  }
  return out;
}

/** One row per fault of the timeline: its window and how long each profile took to be back after it (worst slice). */
function recoveryTable(summary: SummaryData | null, run: RunRecord): string {
  const steps = run.resolved?.timeline.steps ?? [];
  if (!steps.length) return '<p>No fault was injected in this run.</p>';
  const profiles = (run.resolved?.profile_mix ?? []).map((p) => p.profile);
  const max = (k: string) => summary?.metrics[k]?.values.max;
  // A recovery the run's end cut: the wait until the end, a lower bound.
  const cut = (k: string) => (summary?.metrics[`recoveries_cut${k}`]?.values.count ?? 0) > 0;
  const cell = (tags: string) => `<td class="num">${cut(tags) ? '≥ ' : ''}${ms(max(`recovery_time${tags}`))}</td>`;
  const labels = faultLabels(steps);
  let anyCut = false;
  const rows = steps
    .map((st, i) => {
      const label = labels[i]!;
      anyCut ||= cut(`{fault:${label}}`);
      const cells = profiles.map((p) => cell(`{fault:${label},profile:${p}}`)).join('');
      return `<tr><td>${esc(label)}</td><td class="num">${(st.at_ms / 1000).toFixed(1)}–${((st.at_ms + st.for_ms) / 1000).toFixed(1)} s</td>${cell(`{fault:${label}}`)}${cells}</tr>`;
    })
    .join('');
  const head = profiles.map((p) => `<th>${esc(p)}</th>`).join('');
  const note = anyCut
    ? '<p class="note">≥: not back when the run ended; the time is the wait until then, a lower bound.</p>'
    : '';
  return `<table id="recovery"><thead><tr><th>fault</th><th>window</th><th>back after (worst)</th>${head}</tr></thead><tbody>${rows}</tbody></table>${note}`;
}

function figure(c: Chart): string {
  return `<figure id="chart-${c.file.replace(/\.svg$/, '')}" aria-label="${esc(c.title)}">${c.svg}</figure>`;
}

/** What a report compares its run against: a baseline run (`report --baseline`, `run --baseline`). */
export interface BaselineOpts {
  baseline?: LoadedRun;
  /** Allowed relative growth of a latency, % (compare's --tolerance). */
  tolerancePct?: number;
}

/** This run's SLOs beside the baseline's, each with its change; a regression marked as `compare` marks it. */
function baselineBlock(run: RunRecord, summary: SummaryData | null, o: BaselineOpts): string {
  const base = o.baseline;
  if (!base) return '';
  const head = `<h2>Against the baseline</h2><p class="sub">Baseline: run ${esc(base.run.run_id)} (${esc(base.run.scenario)}, ${esc(base.run.started_at)}); latencies may grow by ${o.tolerancePct ?? 10}%, rates by 0.5 points, counts not at all.</p>`;
  if (!summary) return `${head}<p id="baseline">This run kept no summary: nothing to compare.</p>`;
  const self: LoadedRun = { dir: '', run, summary };
  const { refuse, warn } = comparability(base, self);
  if (refuse.length) return `${head}<p id="baseline">Not compared: ${esc(refuse.join('; '))}.</p>`;
  const rows = compareRuns(base, self, o.tolerancePct ?? 10);
  const body = rows
    .map((r, i) => {
      const s = base.run.slos[i]!;
      return `<tr><td>${esc(r.slo)}</td><td class="num">${esc(compareValueText(r.a, s))}</td><td class="num">${esc(compareValueText(r.b, s))}</td><td class="num">${esc(changeText(r))}</td><td class="${r.worse ? 'fail' : 'pass'}">${r.worse ? esc(worseText(r)) : 'ok'}</td></tr>`;
    })
    .join('');
  const worse = rows.filter((r) => r.worse).map((r) => r.slo);
  const line = worse.length
    ? `Worse than the baseline beyond tolerance: ${worse.join(', ')}.`
    : 'No SLO worse than the baseline beyond tolerance.';
  return `${head}${warn.map((w) => `<p class="sub">Warning: ${esc(w)}: the comparison may not mean what it says.</p>`).join('')}<p id="baseline-line">${esc(line)}</p><table id="baseline"><thead><tr><th>SLO</th><th>baseline</th><th>this run</th><th>change</th><th></th></tr></thead><tbody>${body}</tbody></table>`;
}

/** Renders report.html into a run folder (and the charts as SVG files beside it); returns the chart files. */
export async function renderReport(dir: string, o: BaselineOpts = {}): Promise<string[]> {
  const run = JSON.parse(readFileSync(join(dir, 'run.json'), 'utf8')) as RunRecord;
  let summary: SummaryData | null = null;
  try {
    summary = JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8'));
  } catch {
    summary = null;
  }
  const j = judge(summary, run.slos, run.invalid_reasons ?? [], judgeContextOf(run));
  const rs = await runSeries(dir);
  const charts = rs ? await buildRunCharts(rs, phaseValues(summary, run)) : [];
  // Each chart's numbers beside it as CSV (connected.svg → connected.csv): what a person re-plots or checks.
  for (const c of charts) {
    writeFileSync(join(dir, c.file), c.svg);
    writeFileSync(join(dir, c.file.replace(/\.svg$/, '.csv')), toCsv(c.rows));
  }
  const byFile = (f: string) =>
    charts
      .filter((c) => c.file === f)
      .map(figure)
      .join('');
  const main = ['connected.svg', 'latency.svg', 'throughput.svg', 'drops.svg', 'sessions-dropped.svg', 'reconnect.svg']
    .map(byFile)
    .join('');
  const dashboard = existsSync(join(dir, 'k6-dashboard.html'))
    ? ' · <a href="k6-dashboard.html">k6 web dashboard</a>'
    : '';
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>wakestorm ${esc(run.scenario)}: ${j.verdict.toUpperCase()}</title><style>${CSS}</style></head>
<body><main>
<h1>wakestorm · ${esc(run.scenario)}</h1>
<p class="sub">${esc(run.run_id)} · ${esc(run.started_at)} · ${esc(paramText(run.parameters.DEVICES ?? ''))} devices${dashboard}</p>
${verdictBlock(j, run)}
<h2>SLOs</h2>
${sloTable(j)}
${baselineBlock(run, summary, o)}
<h2>Recovery per fault</h2>
${recoveryTable(summary, run)}
${byFile('recovery.svg')}
${byFile('phases.svg')}
${byFile('latency-phases.svg')}
<h2>Fleet over time</h2>
<div id="charts">${main || '<p>No samples were kept for this run (charts off).</p>'}</div>
<h2>Per profile</h2>
${rs ? profileTable(profileRows(rs)) : '<p>No samples were kept for this run.</p>'}
${byFile('latency-profiles.svg')}
<h2>The tester's own health</h2>
${testerBlock(summary, run)}
${byFile('tester.svg')}
${byFile('processes.svg')}
<h2>The server's own view</h2>
${byFile('server.svg') || '<p>The server exposed no metrics during the run (the reference server always does; for yours pass <code>--server-metrics URL</code>).</p>'}
<h2>What ran</h2>
${parameters(run)}
</main></body></html>
`;
  // Written whole, then renamed: a half-written report never exists.
  writeFileSync(join(dir, '.report.html.tmp'), html);
  renameSync(join(dir, '.report.html.tmp'), join(dir, 'report.html'));
  return charts.map((c) => c.file);
}
