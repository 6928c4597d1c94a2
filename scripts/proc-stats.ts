// Process RSS and CPU from /proc, and the kernel's socket queues from ss: the tester's and the benches' own gauges.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const TICKS = 100; // USER_HZ on Linux

export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** pid and every process below it (a server's cluster workers), from each task's /proc children list. */
export function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    try {
      const p = out[i]!;
      const text = readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim();
      if (text) out.push(...text.split(/\s+/).map(Number));
    } catch {
      /* gone, or no children file */
    }
  }
  return out;
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

/** Bytes the kernel holds unsent or unacknowledged on the server's side of each established socket (ss Send-Q). */
export function serverSendQueues(port: number): number[] {
  const out = execFileSync('ss', ['-tnH', 'state', 'established', `( sport = :${port} )`], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  return out
    .split('\n')
    .filter(Boolean)
    .map((l) => Number(l.trim().split(/\s+/)[1]));
}

/** Pages of memory the host's TCP stack holds (/proc/net/sockstat). */
export function tcpMemPages(): number {
  const line = readFileSync('/proc/net/sockstat', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('TCP:'));
  return Number(/mem (\d+)/.exec(line ?? '')?.[1] ?? 0);
}
