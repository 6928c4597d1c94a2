// The server's own view of a run, over time: its Prometheus /metrics read every few seconds while k6 runs (the
// reference server always; a user's server with --server-metrics). What a server exposes under the standard client
// names (process_cpu_seconds_total, process_resident_memory_bytes: Go, Python and Node clients all do) and, where it
// has one, its event-loop lag: the reference server's per-scrape p99, else prom-client's nodejs_eventloop_lag_p99.
import { metricValue } from './proc-sampler.ts';
import { httpCall } from './local-http.ts';

/** How often the server's /metrics is read during a run, ms. */
export const SERVER_SCRAPE_MS = 2000;
/** The most of one exposition read: a server's metrics are kilobytes; past this the read is dropped, not held. */
export const MAX_EXPOSITION_BYTES = 4 * 2 ** 20;

/** One reading of the server's metrics (server-samples.csv); null where the server does not expose it. */
export type ServerSample = {
  /** Unix ms of the read. */
  t: number;
  /** CPU since the previous read, % of a core (process_cpu_seconds_total's rate). */
  cpu_pct: number | null;
  /** Resident memory, MiB (process_resident_memory_bytes). */
  rss_mib: number | null;
  /** Event-loop lag p99, ms, over the window the server reports it for. */
  loop_lag_ms: number | null;
  /** Connections the server holds (the reference server's voice_connections). */
  connections: number | null;
};

/** The lag gauges read, in order: the reference server's (reset by each read), then prom-client's default. */
const LAG_GAUGES = ['voice_event_loop_lag_p99_seconds', 'nodejs_eventloop_lag_p99_seconds'];

const finite = (v: number): number | null => (Number.isFinite(v) ? v : null);

/** One exposition read into a sample; the CPU rate needs the previous read's counter and time. */
export function readServerSample(
  text: string,
  t: number,
  prev: { t: number; cpuSeconds: number | null } | null,
): { sample: ServerSample; cpuSeconds: number | null } {
  const cpuSeconds = finite(metricValue(text, 'process_cpu_seconds_total'));
  const cpu =
    cpuSeconds !== null && prev?.cpuSeconds != null && t > prev.t
      ? +Math.max(0, ((cpuSeconds - prev.cpuSeconds) / ((t - prev.t) / 1000)) * 100).toFixed(1)
      : null;
  const rss = finite(metricValue(text, 'process_resident_memory_bytes'));
  const lag = LAG_GAUGES.map((g) => finite(metricValue(text, g))).find((v) => v !== null) ?? null;
  return {
    cpuSeconds,
    sample: {
      t,
      cpu_pct: cpu,
      rss_mib: rss === null ? null : +(rss / 2 ** 20).toFixed(1),
      loop_lag_ms: lag === null ? null : +(lag * 1000).toFixed(2),
      connections: finite(metricValue(text, 'voice_connections')),
    },
  };
}

/**
 * Reads `url` every SERVER_SCRAPE_MS until stopped. A read that fails or times out is skipped (a server too busy to
 * answer its metrics is what the devices' numbers show); the first read only primes the CPU counter.
 */
export function watchServerMetrics(url: string): { stop(): ServerSample[] } {
  const rows: ServerSample[] = [];
  let prev: { t: number; cpuSeconds: number | null } | null = null;
  let busy = false;
  const read = async () => {
    if (busy) return;
    busy = true;
    try {
      const r = await httpCall(url, {
        signal: AbortSignal.timeout(SERVER_SCRAPE_MS - 100),
        maxBytes: MAX_EXPOSITION_BYTES,
      });
      const text = r.ok ? r.text : null;
      if (text === null) return;
      const t = Date.now();
      const { sample, cpuSeconds } = readServerSample(text, t, prev);
      if (prev) rows.push(sample);
      prev = { t, cpuSeconds };
    } catch {
      /* skipped: the next read tries again */
    } finally {
      busy = false;
    }
  };
  void read();
  const timer = setInterval(() => void read(), SERVER_SCRAPE_MS);
  return {
    stop() {
      clearInterval(timer);
      return rows;
    },
  };
}
