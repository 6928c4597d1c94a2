// Fidelity bench: the devices' numbers against known truths, at growing fleet sizes, so users know where the
// generator starts to distort its own measurements.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { defaultConfig } from '../server/config.ts';
import { DEFAULT_ENGINE } from '../scripts/engine.ts';
import { runScenario } from '../scripts/run.ts';
import { Sampler, serverLagP99Ms } from '../scripts/proc-sampler.ts';
import { timerLagCounts, timerLagQuantile } from '../core/timer-lag.ts';

const LATENCY_MS = 25; // each way
const CUT_AT_MS = 50_000;
const CUT_MS = 2500;
const BACKOFF_MS = 1000;

export interface FidelityRow {
  devices: number;
  wake_every: string;
  truth: { wake_ack_ms: number; response_ms: number; reconnect_ms: number };
  measured: {
    wake_ack_p50: number | null;
    wake_ack_p99: number | null;
    response_p50: number | null;
    response_p99: number | null;
    reconnect_p50: number | null;
    reconnect_p99: number | null;
  };
  error_p50_ms: { wake_ack: number | null; response: number | null; reconnect: number | null };
  error_p99_ms?: { wake_ack: number | null; response: number | null };
  samples: { wake_ack: number; response: number; reconnect: number };
  /** Where the devices ran (the default engine, native, unless a run said otherwise). */
  engine?: string;
  k6_cpu_pct: number | null;
  engine_cpu_pct?: number | null;
  server_cpu_pct: number | null;
  toxiproxy_cpu_pct: number | null;
  server_lag_p99_ms: number | null;
  /** How late the generator's timers fired (the VUs' 1 s probes on k6, the device timers in the engine). */
  vu_lag_p50_ms: number | null;
  vu_lag_p99_ms: number | null;
  /** The native engine's timer lag per firing in the steady phase, p50 and p99 (core/timer-lag.ts). */
  timer_lag_p50_ms?: number | null;
  timer_lag_p99_ms?: number | null;
}

export async function fidelityStep(
  n: number,
  quick: boolean,
  resultsRoot: string,
  log: (l: string) => void,
): Promise<FidelityRow> {
  const { sttMs, llmMs, ttsMs, vadSilenceMs } = defaultConfig;
  // Keep the number of concurrent conversations about the same at every size, so the fleet's size is what varies.
  const wake = n <= 100 ? 'poisson:10s' : n <= 1000 ? 'poisson:30s' : 'poisson:5m';
  const cutAt = quick ? 12_000 : CUT_AT_MS;
  const duration = quick ? 20 : 62;
  const timeline = join(resultsRoot, `calibration-timeline-${n}.json`);
  writeFileSync(
    timeline,
    JSON.stringify([
      { at: '0s', for: `${duration - 2}s`, fault: 'latency', stream: 'upstream', params: { latency: LATENCY_MS } },
      { at: '0s', for: `${duration - 2}s`, fault: 'latency', stream: 'downstream', params: { latency: LATENCY_MS } },
      { at: `${cutAt}ms`, for: `${CUT_MS}ms`, fault: 'cut' },
    ]),
  );
  const sampler = new Sampler();
  let lag: number | null = null;
  let t0 = 0;
  const r = await runScenario({
    scenario: join(import.meta.dirname, 'k6', 'calibration.ts'),
    devices: n,
    devicesPerVu: 200,
    engine: DEFAULT_ENGINE,
    duration: `${duration}s`,
    wake,
    timeline,
    vars: {
      CUT_AT_MS: String(cutAt),
      BACKOFF: `fixed:${BACKOFF_MS}`,
      RAMP: `${Math.min(20, Math.max(2, Math.ceil(n / 500)))}s`,
    },
    resultsRoot,
    runId: `calibration-${n}`,
    echo: false,
    dashboard: false,
    charts: false,
    fdLimit: 1_048_576,
    log: () => {},
    onStarted: (p) => {
      t0 = p.startedAt;
      sampler.start({
        k6: p.k6Pid,
        server: p.serverPid,
        toxiproxy: p.toxiproxyPids,
        ...(p.enginePid ? { engine: p.enginePid } : {}),
      });
      // The server's event-loop lag over the steady phase (the gauge resets at each scrape).
      setTimeout(() => void fetch(`${p.serverHttpUrl}/metrics`).catch(() => {}), 5000);
      setTimeout(
        () =>
          void serverLagP99Ms(p.serverHttpUrl)
            .then((ms) => (lag = +ms.toFixed(2)))
            .catch(() => {}),
        cutAt - 1000,
      );
    },
  });
  sampler.stop();
  // A signal stopped this step: stop the whole bench rather than carry on with half a measurement.
  if (r.interrupted) throw new Error(`interrupted during ${r.runId}`);
  const m = r.summary?.metrics ?? {};
  const v = (name: string, q: string) => (m[name]?.values.count ? +m[name].values[q]!.toFixed(1) : null);
  const truth = {
    wake_ack_ms: 2 * LATENCY_MS,
    response_ms: vadSilenceMs + LATENCY_MS + sttMs + llmMs + ttsMs + LATENCY_MS,
    reconnect_ms: Math.ceil(CUT_MS / BACKOFF_MS) * BACKOFF_MS + 2 * LATENCY_MS,
  };
  const measured = {
    wake_ack_p50: v('wake_ack_latency{phase:steady}', 'p(50)'),
    wake_ack_p99: v('wake_ack_latency{phase:steady}', 'p(99)'),
    response_p50: v('response_latency{phase:steady}', 'p(50)'),
    response_p99: v('response_latency{phase:steady}', 'p(99)'),
    reconnect_p50: v('reconnect_time', 'p(50)'),
    reconnect_p99: v('reconnect_time', 'p(99)'),
  };
  const quantile = (q: number) => {
    const x = timerLagQuantile(timerLagCounts(m, 'phase:steady'), q);
    return x === null ? null : +x.toFixed(2);
  };
  const err = (x: number | null, t: number) => (x === null ? null : +(x - t).toFixed(1));
  const steady = { from: t0 + 10_000, to: t0 + cutAt - 2000 };
  const row: FidelityRow = {
    devices: n,
    wake_every: wake,
    truth,
    measured,
    error_p50_ms: {
      wake_ack: err(measured.wake_ack_p50, truth.wake_ack_ms),
      response: err(measured.response_p50, truth.response_ms),
      reconnect: err(measured.reconnect_p50, truth.reconnect_ms),
    },
    // The truths are fixed delays: a p99 past them is the generator's (or the server's) jitter.
    error_p99_ms: {
      wake_ack: err(measured.wake_ack_p99, truth.wake_ack_ms),
      response: err(measured.response_p99, truth.response_ms),
    },
    samples: {
      wake_ack: m['wake_ack_latency{phase:steady}']?.values.count ?? 0,
      response: m['response_latency{phase:steady}']?.values.count ?? 0,
      reconnect: m.reconnect_time?.values.count ?? 0,
    },
    engine: DEFAULT_ENGINE,
    k6_cpu_pct: sampler.stats('k6', steady.from, steady.to)?.cpu_avg_pct ?? null,
    engine_cpu_pct: sampler.stats('engine', steady.from, steady.to)?.cpu_avg_pct ?? null,
    server_cpu_pct: sampler.stats('server', steady.from, steady.to)?.cpu_avg_pct ?? null,
    toxiproxy_cpu_pct: sampler.stats('toxiproxy', steady.from, steady.to)?.cpu_avg_pct ?? null,
    server_lag_p99_ms: lag,
    timer_lag_p50_ms: quantile(0.5),
    timer_lag_p99_ms: quantile(0.99),
    vu_lag_p50_ms: v('vu_loop_lag{phase:steady}', 'p(50)'),
    vu_lag_p99_ms: v('vu_loop_lag{phase:steady}', 'p(99)'),
  };
  log(
    `  ${String(n).padStart(6)} devices: wake_ack p50 ${measured.wake_ack_p50} (truth ${truth.wake_ack_ms}, err ${row.error_p50_ms.wake_ack}) ` +
      `response p50 ${measured.response_p50} (truth ${truth.response_ms}, err ${row.error_p50_ms.response}) ` +
      `reconnect p50 ${measured.reconnect_p50} (truth ${truth.reconnect_ms}, err ${row.error_p50_ms.reconnect}); k6 ${row.k6_cpu_pct}% engine ${row.engine_cpu_pct ?? '-'}% server ${row.server_cpu_pct}% toxiproxy ${row.toxiproxy_cpu_pct}% server lag p99 ${lag} ms; VU loop lag p50/p99 ${row.vu_lag_p50_ms}/${row.vu_lag_p99_ms} ms`,
  );
  return row;
}

export async function fidelityBench(
  quick: boolean,
  resultsRoot: string,
  log: (l: string) => void,
): Promise<FidelityRow[]> {
  const sizes = quick ? [20] : [100, 1000, 5000, 10_000];
  log(
    `fidelity: truths are ${LATENCY_MS} ms latency each way, the server's endpointing window and stt+llm+tts, and a ${CUT_MS} ms cut with fixed ${BACKOFF_MS} ms backoff`,
  );
  const rows: FidelityRow[] = [];
  for (const n of sizes) rows.push(await fidelityStep(n, quick, resultsRoot, log));
  return rows;
}
