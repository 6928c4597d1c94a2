// Process RSS and CPU from /proc, for benches: CPU as % of one core over a window.
import { readFileSync } from 'node:fs';

const TICKS = 100; // USER_HZ on Linux

export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** utime + stime in seconds; with children=true, waited-for children too. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / TICKS;
}

/** CPU % of one core used by pid over `ms`. */
export async function cpuPercent(pid: number, ms: number): Promise<number> {
  const a = cpuSeconds(pid);
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  return ((cpuSeconds(pid) - a) / ((performance.now() - t0) / 1000)) * 100;
}
