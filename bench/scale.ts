// Scale bench: the largest fleet this box holds (every device connected, keepalives at cadence, wakes with real-time
// audio both ways), k6 and server cost per DEVICES_PER_VU, and the plain-k6 baseline measured in the same run.
import { defaultDevicesPerVu } from '../core/run-config.ts';
import { join } from 'node:path';
import { runScenario, type RunOptions, type RunResult } from '../scripts/run.ts';
import { Sampler, type ProcStats } from '../scripts/proc-sampler.ts';
import { SATURATION } from '../core/verdict.ts';
import { timerLagCounts, timerLagQuantile } from '../core/timer-lag.ts';

/**
 * baseline: the plain k6 script, one device per VU. floor: many sockets per VU with keepalive and nothing else (what
 * k6/websockets itself costs). wakestorm-idle: the device model with wakes off. wakestorm: the model with wakes and
 * real-time audio.
 */
export type ScaleKind = 'baseline' | 'floor' | 'wakestorm-idle' | 'engine-idle' | 'wakestorm' | 'engine';

const round2 = (x: number | null) => (x === null ? null : +x.toFixed(2));

const SCRIPT: Record<ScaleKind, string> = {
  baseline: join(import.meta.dirname, 'k6', 'baseline.ts'),
  floor: join(import.meta.dirname, 'k6', 'floor.ts'),
  'wakestorm-idle': 'wake-latency',
  // The same idle devices in the native engine (engine/), k6 driving it: the tester is k6 and the engine together.
  'engine-idle': 'wake-latency',
  // Talking devices in the engine: the same fleet and criteria as the wakestorm rows.
  engine: 'wake-latency',
  wakestorm: 'wake-latency',
};

export interface ScaleRow {
  kind: ScaleKind;
  devices: number;
  devices_per_vu: number;
  holds: boolean;
  why_not: string[];
  server_connections_min: number | null;
  k6: ProcStats | null;
  /** The native engine (engine-idle rows), and the tester as a whole: k6, plus the engine when there is one. */
  engine: ProcStats | null;
  tester: ProcStats | null;
  server: ProcStats | null;
  toxiproxy: ProcStats | null;
  k6_kib_per_device: number | null;
  devices_per_gib: number | null;
  devices_per_core: number | null;
  ping_rtt_count: number;
  /** The baseline row the ratios compare with (same fleet size when the bench ran one). */
  baseline_devices?: number;
  per_gib_vs_baseline?: number | null;
  per_core_vs_baseline?: number | null;
  sessions_completed: number;
  audio_slips: number;
  playback_underruns: number;
  vu_lag_p99_ms: number | null;
  /** The native engine's timer lag per firing, p50 and p99 (core/timer-lag.ts); null on the k6 device. */
  timer_lag_p50_ms?: number | null;
  timer_lag_p99_ms?: number | null;
  response_p95_ms: number | null;
  wake_ack_p95_ms: number | null;
}

const FD_LIMIT = 1_048_576;

function rampSeconds(n: number): number {
  return Math.min(30, Math.max(2, Math.ceil(n / 500)));
}

type Started = Parameters<NonNullable<RunOptions['onStarted']>>[0];

/**
 * One bench run: quiet, no dashboard or charts, a high open-file limit; `pids` picks the processes sampled from the
 * moment k6 runs. A signal that stopped the run stops the whole bench rather than carry on with half a measurement.
 * `fleetT0` is the fleet's start (the first connection the server saw), else k6's start.
 */
export async function sampledRun(
  opts: Omit<RunOptions, 'echo' | 'dashboard' | 'charts' | 'fdLimit' | 'log' | 'onStarted'>,
  pids: (p: Started) => Record<string, number | number[] | null>,
  scrapeWhen?: (sinceFirstConnectedMs: number) => boolean,
): Promise<{ r: RunResult; sampler: Sampler; fleetT0: number }> {
  const sampler = new Sampler();
  let t0 = 0;
  const r = await runScenario({
    ...opts,
    echo: false,
    dashboard: false,
    charts: false,
    fdLimit: FD_LIMIT,
    log: () => {},
    onStarted: (p) => {
      t0 = p.startedAt;
      sampler.start(pids(p), p.serverHttpUrl, scrapeWhen);
    },
  });
  sampler.stop();
  if (r.interrupted) throw new Error(`interrupted during ${r.runId}`);
  return { r, sampler, fleetT0: sampler.firstConnectedAt() ?? t0 };
}

export async function scaleStep(opts: {
  kind: ScaleKind;
  devices: number;
  dpv: number;
  steadyS: number;
  resultsRoot: string;
  log: (l: string) => void;
}): Promise<ScaleRow> {
  const { devices: n, dpv } = opts;
  const ramp = rampSeconds(n);
  const duration = ramp + 8 + opts.steadyS + 3;
  const model =
    opts.kind === 'wakestorm' ||
    opts.kind === 'wakestorm-idle' ||
    opts.kind === 'engine-idle' ||
    opts.kind === 'engine';
  const native = opts.kind === 'engine-idle' || opts.kind === 'engine';
  const talking = opts.kind === 'wakestorm' || opts.kind === 'engine';
  const { r, sampler, fleetT0 } = await sampledRun(
    {
      scenario: SCRIPT[opts.kind],
      devices: n,
      devicesPerVu: opts.kind === 'baseline' ? undefined : dpv,
      duration: `${duration}s`,
      profile: model ? 'recommended' : undefined,
      wake: talking ? 'poisson:5m' : model ? 'off' : undefined,
      engine: native ? 'native' : 'k6',
      vars: { RAMP: `${ramp}s` },
      resultsRoot: opts.resultsRoot,
      runId: `${opts.kind}-${n}-dpv${dpv}`,
    },
    // The tester is k6, and the engine when the devices run there.
    (p) => ({
      k6: p.k6Pid,
      engine: p.enginePid,
      tester: p.enginePid ? [p.k6Pid, p.enginePid] : p.k6Pid,
      server: p.serverPid,
      toxiproxy: p.toxiproxyPids,
    }),
  );
  // The steady window: after the ramp and settling, before the end, counted from the fleet's start (the first
  // connection the server saw): k6 spends seconds compiling the scripts in every VU first, more with more VUs.
  const from = fleetT0 + (ramp + 8) * 1000;
  const to = fleetT0 + (ramp + 8 + opts.steadyS) * 1000;
  const k6 = sampler.stats('k6', from, to);
  const tester = sampler.stats('tester', from, to);
  const conns = sampler.connections(from, to);
  const m = r.summary?.metrics ?? {};
  const count = (x: string) => m[x]?.values.count ?? 0;
  const why: string[] = [];
  if (!conns || conns.min !== n)
    why.push(`server saw ${conns ? `${conns.min}-${conns.max}` : 'no'} connections, not ${n}`);
  if (model) {
    const cs = m.connect_success?.values;
    if (!cs || cs.fails) why.push(`${cs?.fails ?? '?'} failed connects`);
    if (count('connection_drops')) why.push(`${count('connection_drops')} drops`);
    // recommended pings every 15 s after it connects: a device that connected at t sends floor((D - t) / 15).
    const lo = n * Math.floor((duration - ramp) / 15);
    const hi = n * Math.ceil(duration / 15);
    if (count('ping_rtt') < lo * 0.95 || count('ping_rtt') > hi)
      why.push(`${count('ping_rtt')} pings answered, expected ${lo}-${hi}`);
    if ((m.session_drop_rate?.values.rate ?? 0) >= 0.01)
      why.push(`session drop rate ${(m.session_drop_rate!.values.rate! * 100).toFixed(1)}%`);
    if ((m.response_latency?.values['p(95)'] ?? 0) >= 800)
      why.push(`response p95 ${m.response_latency!.values['p(95)']!.toFixed(0)} ms`);
    if ((m.wake_ack_latency?.values['p(95)'] ?? 0) >= 300)
      why.push(`wake ack p95 ${m.wake_ack_latency!.values['p(95)']!.toFixed(0)} ms`);
  }
  if (r.stuck) why.push('k6 did not end by itself (a stuck VU; the watchdog stopped it)');
  // Baseline and floor scripts have no device model (no devices_started): only the device model's runs are judged.
  else if (opts.kind !== 'baseline' && opts.kind !== 'floor' && r.judgement.verdict === 'invalid')
    why.push(`INVALID: ${r.judgement.invalid.join('; ')}`);
  else if ((opts.kind === 'baseline' || opts.kind === 'floor') && r.judgement.invalid.some((x) => /^k6 /.test(x)))
    why.push(r.judgement.invalid.join('; '));
  if (talking) {
    // Real-time audio both ways, with the budgets a jitter buffer absorbs: at most 1 uplink frame in 1000 more than
    // 60 ms late (k6's ws_msgs_sent counts every message sent, frames being nearly all of them; in the engine, k6 sends
    // only control messages and the engine counts its frames as audio_frames), and a playback underrun in at most 1%
    // of completed conversations.
    const slips = count('audio_slips');
    const sent = native ? count('audio_frames') : count('ws_msgs_sent');
    if (slips > sent * SATURATION.heldAudioSlipShare)
      why.push(
        `${slips} uplink frames slipped >60 ms (${((slips / Math.max(1, sent)) * 100).toFixed(2)}% of ${sent} messages; VU event loops ran late)`,
      );
    const underruns = count('playback_underruns');
    const done = count('sessions_completed');
    if (underruns > done * 0.01) why.push(`${underruns} playback underruns in ${done} conversations`);
  }
  const row: ScaleRow = {
    kind: opts.kind,
    devices: n,
    devices_per_vu: dpv,
    holds: why.length === 0,
    why_not: why,
    server_connections_min: conns?.min ?? null,
    k6,
    engine: native ? sampler.stats('engine', from, to) : null,
    tester,
    server: sampler.stats('server', from, to),
    toxiproxy: sampler.stats('toxiproxy', from, to),
    k6_kib_per_device: tester ? +((tester.rss_avg_mib * 1024) / n).toFixed(1) : null,
    devices_per_gib: tester ? Math.round(n / (tester.rss_avg_mib / 1024)) : null,
    devices_per_core: tester && tester.cpu_avg_pct > 0 ? Math.round(n / (tester.cpu_avg_pct / 100)) : null,
    ping_rtt_count: count('ping_rtt'),
    sessions_completed: count('sessions_completed'),
    audio_slips: count('audio_slips'),
    playback_underruns: count('playback_underruns'),
    vu_lag_p99_ms: m.vu_loop_lag?.values.count ? +m.vu_loop_lag.values['p(99)']!.toFixed(1) : null,
    timer_lag_p50_ms: round2(timerLagQuantile(timerLagCounts(m), 0.5)),
    timer_lag_p99_ms: round2(timerLagQuantile(timerLagCounts(m), 0.99)),
    response_p95_ms: m.response_latency?.values.count ? +m.response_latency.values['p(95)']!.toFixed(1) : null,
    wake_ack_p95_ms: m.wake_ack_latency?.values.count ? +m.wake_ack_latency.values['p(95)']!.toFixed(1) : null,
  };
  opts.log(
    `  ${opts.kind.padEnd(14)} ${String(n).padStart(6)} devices, ${String(dpv).padStart(3)}/VU: ${row.holds ? 'holds' : `does not hold (${why.join('; ')})`}; ` +
      `k6 ${k6?.rss_avg_mib ?? '-'} MiB ${k6?.cpu_avg_pct ?? '-'}%${native ? ` + engine ${row.engine?.rss_avg_mib ?? '-'} MiB ${row.engine?.cpu_avg_pct ?? '-'}%` : ''} (${row.k6_kib_per_device ?? '-'} KiB/device); server ${row.server?.rss_avg_mib ?? '-'} MiB ${row.server?.cpu_avg_pct ?? '-'}%; toxiproxy ${row.toxiproxy?.rss_avg_mib ?? '-'} MiB ${row.toxiproxy?.cpu_avg_pct ?? '-'}%`,
  );
  return row;
}

export async function scaleBench(
  quick: boolean,
  resultsRoot: string,
  log: (l: string) => void,
): Promise<{ rows: ScaleRow[]; largest: number | null; perGibRatio: number | null; perCoreRatio: number | null }> {
  const steadyS = quick ? 5 : 30;
  const baseN = quick ? 40 : 1000;
  const bigN = quick ? 200 : 10_000;
  const rows: ScaleRow[] = [];
  log(
    `scale: baseline (plain k6, one device per VU) at ${baseN} and ${bigN}, wakestorm at ${baseN}, then DEVICES_PER_VU 10/50/200 at ${bigN}, the k6 socket floor and the idle model at ${bigN}, then the largest fleet that holds`,
  );
  rows.push(await scaleStep({ kind: 'baseline', devices: baseN, dpv: 1, steadyS, resultsRoot, log }));
  // The baseline at the big fleet too, so the big rows compare with a baseline of their own size.
  rows.push(await scaleStep({ kind: 'baseline', devices: bigN, dpv: 1, steadyS, resultsRoot, log }));
  rows.push(await scaleStep({ kind: 'wakestorm', devices: baseN, dpv: 1, steadyS, resultsRoot, log }));
  for (const dpv of quick ? [10, 50] : [10, 50, 200, 500])
    rows.push(await scaleStep({ kind: 'wakestorm', devices: bigN, dpv, steadyS, resultsRoot, log }));
  // Where the cost goes at the big fleet: k6's own socket floor, then the device model without audio.
  rows.push(await scaleStep({ kind: 'floor', devices: bigN, dpv: quick ? 50 : 200, steadyS, resultsRoot, log }));
  rows.push(
    await scaleStep({ kind: 'wakestorm-idle', devices: bigN, dpv: quick ? 50 : 200, steadyS, resultsRoot, log }),
  );
  rows.push(await scaleStep({ kind: 'engine-idle', devices: bigN, dpv: quick ? 50 : 200, steadyS, resultsRoot, log }));
  // A VU only relays its engine session's batches: fewer, larger sessions shrink k6's share (each VU compiles the
  // whole script). The native engine's default layout (core/run-config.ts defaultDevicesPerVu) is what users get.
  const native = defaultDevicesPerVu(bigN, true);
  if (!quick)
    rows.push(await scaleStep({ kind: 'engine-idle', devices: bigN, dpv: native, steadyS, resultsRoot, log }));
  rows.push(await scaleStep({ kind: 'engine', devices: bigN, dpv: quick ? 50 : native, steadyS, resultsRoot, log }));
  let largest =
    rows.filter((r) => r.kind === 'wakestorm' && r.holds).reduce((a, r) => Math.max(a, r.devices), 0) || null;
  if (!quick && largest === bigN) {
    for (const n of [15_000, 20_000]) {
      const row = await scaleStep({ kind: 'wakestorm', devices: n, dpv: 200, steadyS, resultsRoot, log });
      rows.push(row);
      if (!row.holds) break;
      largest = n;
    }
  } else if (!quick) {
    // The big fleet does not hold: bisect (200 devices per VU) to the largest that does, within 1000 devices.
    let lo = largest ?? 0;
    let hi = bigN;
    while (hi - lo > 1000) {
      const mid = Math.round((lo + hi) / 2 / 250) * 250;
      const row = await scaleStep({ kind: 'wakestorm', devices: mid, dpv: 200, steadyS, resultsRoot, log });
      rows.push(row);
      if (row.holds) lo = mid;
      else hi = mid;
    }
    largest = lo || null;
  }
  // Ratios per row against the baseline of the same size (else the smaller one), measured in this run.
  const baselines = rows.filter((r) => r.kind === 'baseline');
  for (const r of rows) {
    const base = baselines.find((b) => b.devices === r.devices) ?? baselines[0]!;
    r.baseline_devices = base.devices;
    r.per_gib_vs_baseline =
      r.devices_per_gib && base.devices_per_gib ? +(r.devices_per_gib / base.devices_per_gib).toFixed(2) : null;
    r.per_core_vs_baseline =
      r.devices_per_core && base.devices_per_core ? +(r.devices_per_core / base.devices_per_core).toFixed(2) : null;
  }
  const ours = rows.filter((r) => r.kind !== 'baseline' && r.kind !== 'floor');
  const perGibRatio = Math.max(0, ...ours.map((r) => r.per_gib_vs_baseline ?? 0)) || null;
  const perCoreRatio = Math.max(0, ...ours.map((r) => r.per_core_vs_baseline ?? 0)) || null;
  return { rows, largest, perGibRatio, perCoreRatio };
}
