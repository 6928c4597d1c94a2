// Samples processes' RSS and CPU once a second during a run (wakestorm run's tester health, the benches' numbers).
import { readFileSync } from 'node:fs';
import type { ProcessStats } from '../core/run-contract.ts';
import { cpuSeconds, processTree, rssMiB } from './proc-stats.ts';
import { httpCall, httpJson } from './local-http.ts';

/** One sample of a Prometheus text exposition (the server's /metrics); NaN when it is not there. */
export function metricValue(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
  return line ? Number(line.split(' ').pop()) : NaN;
}

/** The reference server's event-loop lag p99 (ms) since the previous scrape: each read resets the gauge's window. */
export async function serverLagP99Ms(httpUrl: string): Promise<number> {
  const text = (await httpCall(`${httpUrl}/metrics`)).text ?? '';
  return metricValue(text, 'voice_event_loop_lag_p99_seconds') * 1000;
}

/** One process's CPU and memory over a window: run.json's `processes` (core/run-contract.ts). */
export type ProcStats = ProcessStats;

type Sample = { t: number; rss: number; cpu: number };
/** CPU between two samples of one process (or one sum), % of a core. */
const cpuRate = (a: Sample, b: Sample) => ((b.cpu - a.cpu) / ((b.t - a.t) / 1000)) * 100;

export class Sampler {
  private timer: NodeJS.Timeout | null = null;
  private samples = new Map<string, Sample[]>();
  /** With `byProcess`: each process of each name's tree apart, by pid, named by /proc/<pid>/comm. */
  private perPid = new Map<number, { name: string; comm: string; s: Sample[] }>();

  constructor(private readonly opts: { byProcess?: boolean } = {}) {}
  private health: { t: number; connections: number }[] = [];
  private scrapes: { t: number; text: string }[] = [];

  /**
   * A name may stand for several processes (Toxiproxy shards): their RSS and CPU are summed, each with the processes
   * below it (the reference server's workers). `scrapeWhen`, given the ms since the server first counted a
   * connection: whether to scrape its /metrics this second too (a gathering across workers costs the server: a bench
   * asks only in a quiet window).
   */
  start(
    pids: Record<string, number | number[] | null>,
    healthUrl?: string,
    scrapeWhen?: (sinceFirstConnectedMs: number) => boolean,
  ): void {
    this.timer = setInterval(() => {
      const t = Date.now();
      for (const [name, pid] of Object.entries(pids)) {
        const list = ([] as (number | null)[])
          .concat(pid)
          .filter((p): p is number => !!p)
          .flatMap(processTree);
        if (!list.length) continue;
        try {
          const samples = this.samples.get(name) ?? this.samples.set(name, []).get(name)!;
          const each = list.map((p) => ({ p, rss: rssMiB(p), cpu: cpuSeconds(p) }));
          const rss = each.reduce((a, x) => a + x.rss, 0);
          // A process that has exited but is not yet reaped (a zombie) has no VmRSS: NaN would poison the peak and
          // the average (run.json said a peak of null, read as 0 MiB, once in CI), so such a sample is left out.
          if (!Number.isFinite(rss)) continue;
          samples.push({ t, rss, cpu: each.reduce((a, x) => a + x.cpu, 0) });
          if (this.opts.byProcess)
            for (const x of each) {
              const e = this.perPid.get(x.p) ?? { name, comm: readFileSync(`/proc/${x.p}/comm`, 'utf8').trim(), s: [] };
              e.s.push({ t, rss: x.rss, cpu: x.cpu });
              this.perPid.set(x.p, e);
            }
        } catch {
          /* exited */
        }
      }
      if (healthUrl) {
        httpJson<{ connections: number }>(`${healthUrl}/health`, { signal: AbortSignal.timeout(900) })
          .then((h) => this.health.push({ t, connections: h.json.connections }))
          .catch(() => {});
        const first = this.firstConnectedAt();
        if (scrapeWhen && first !== null && scrapeWhen(t - first))
          httpCall(`${healthUrl}/metrics`, { signal: AbortSignal.timeout(1900) })
            .then((r) => r.text !== null && this.scrapes.push({ t, text: r.text }))
            .catch(() => {});
      }
    }, 1000);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** The latest RSS of a name, MiB (null before its first sample). */
  latestRss(name: string): number | null {
    return this.samples.get(name)?.at(-1)?.rss ?? null;
  }

  /** Stats of one process between two instants. */
  stats(name: string, from: number, to: number): ProcStats | null {
    const s = (this.samples.get(name) ?? []).filter((x) => x.t >= from && x.t <= to);
    if (s.length < 2) return null;
    const cpu = cpuRate(s[0]!, s.at(-1)!);
    // The busiest second: the largest of the per-second rates series() gives (already rounded to 0.1).
    const peak = Math.max(0, ...this.series(name, from, to).map((x) => x.cpu_pct));
    return {
      rss_max_mib: +Math.max(...s.map((x) => x.rss)).toFixed(1),
      rss_avg_mib: +(s.reduce((a, x) => a + x.rss, 0) / s.length).toFixed(1),
      cpu_avg_pct: +cpu.toFixed(1),
      cpu_max_pct: +peak.toFixed(1),
    };
  }

  /**
   * Every sample of a name between two instants, with the CPU it used since the one before (% of a core): the
   * report's processes-over-time chart.
   */
  series(name: string, from: number, to: number): { t: number; rss_mib: number; cpu_pct: number }[] {
    const s = (this.samples.get(name) ?? []).filter((x) => x.t >= from && x.t <= to);
    return s.slice(1).map((x, i) => ({
      t: x.t,
      rss_mib: +x.rss.toFixed(1),
      cpu_pct: +Math.max(0, cpuRate(s[i]!, x)).toFixed(1),
    }));
  }

  /**
   * A name's processes apart (a Sampler made with `byProcess`), summed by process name (/proc/<pid>/comm, 15
   * characters) between two instants: RSS averaged, CPU over the window; largest RSS first.
   */
  split(name: string, from: number, to: number): { name: string; rss_avg_mib: number; cpu_pct: number }[] {
    const by = new Map<string, { rss: number; cpu: number }>();
    for (const e of this.perPid.values()) {
      const w = e.s.filter((x) => x.t >= from && x.t <= to);
      if (e.name !== name || w.length < 2) continue;
      const acc = by.get(e.comm) ?? { rss: 0, cpu: 0 };
      acc.rss += w.reduce((a, x) => a + x.rss, 0) / w.length;
      acc.cpu += cpuRate(w[0]!, w.at(-1)!);
      by.set(e.comm, acc);
    }
    return [...by]
      .map(([comm, v]) => ({ name: comm, rss_avg_mib: +v.rss.toFixed(1), cpu_pct: +v.cpu.toFixed(1) }))
      .sort((x, y) => y.rss_avg_mib - x.rss_avg_mib);
  }

  /** When the server first reported a connection: the fleet's start, after k6's init (which grows with its VUs). */
  firstConnectedAt(): number | null {
    return this.health.find((x) => x.connections > 0)?.t ?? null;
  }

  /** The last /metrics scrape taken before `t` (when `start` was asked for scrapes), or null. */
  metricsBefore(t: number): { t: number; text: string } | null {
    return this.scrapes.filter((x) => x.t < t).pop() ?? null;
  }

  /** Every /health sample: when, and how many connections the server counted. */
  connectionSeries(): { t: number; connections: number }[] {
    return [...this.health];
  }

  /** The server's connection count in the window: min and max as /health saw them. */
  connections(from: number, to: number): { min: number; max: number } | null {
    const h = this.health.filter((x) => x.t >= from && x.t <= to);
    if (!h.length) return null;
    return { min: Math.min(...h.map((x) => x.connections)), max: Math.max(...h.map((x) => x.connections)) };
  }
}
