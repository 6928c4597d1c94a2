// Child processes and ports on loopback: a free port, a child waited on until its health URL answers, the tail of its
// output for an error line, and a stop that escalates from SIGTERM to SIGKILL.
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { WakestormError } from '../core/errors.ts';
import { httpCall } from './local-http.ts';

/** Resolves to true if 127.0.0.1:port can be bound now. */
/** True when a process with this pid is alive (signal 0 asks without sending anything; EPERM: alive, not ours). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/**
 * The first port of the kernel's ephemeral range (ip_local_port_range), from which it gives outgoing connections
 * their local port.
 */
function ephemeralLow(): number {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    return Number.isInteger(low) && low > 0 ? low : 32768;
  } catch {
    return 32768;
  }
}

const LISTEN_FLOOR = 10_000;
const handedOut = new Set<number>();

/**
 * A port to listen on, free now. It comes from below the ephemeral range: a port the kernel hands out (listen(0))
 * can be taken by an outgoing connection (a device's, a proxy's upstream) between the pick and the bind, and was
 * (a chaos test's Toxiproxy could not listen while a fleet reconnected). A port is handed out once per process.
 */
export async function pickFreePort(): Promise<number> {
  const low = ephemeralLow();
  for (let i = 0; low - LISTEN_FLOOR > 1000 && i < 50; i++) {
    const port = LISTEN_FLOOR + Math.floor(Math.random() * (low - LISTEN_FLOOR));
    if (handedOut.has(port)) continue;
    handedOut.add(port); // before the check: a concurrent pick must not take it meanwhile
    if (await portFree(port)) return port;
  }
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitHealthy(
  url: string,
  timeoutMs: number,
  child: ChildProcess | null,
  what: string,
  tail: () => string,
  /** Stops waiting (quietly) when aborted: another sign of readiness came first. */
  stop?: AbortSignal,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (stop?.aborted) return;
    if (child && child.exitCode !== null)
      throw new WakestormError(`${what} exited with code ${child.exitCode} before it was healthy: ${tail()}`, 1);
    try {
      const res = await httpCall(url, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline)
      throw new WakestormError(
        `${what} never got healthy at ${url} within ${timeoutMs} ms${tail() ? `: ${tail()}` : ''}`,
        1,
      );
    await sleep(100);
  }
}

/** Keeps the last 2 KB a child printed; the returned function gives its last two lines. */
export function outputTail(child: ChildProcess): () => string {
  let buf = '';
  const add = (d: Buffer) => (buf = (buf + d.toString()).slice(-2000));
  child.stdout?.on('data', add);
  child.stderr?.on('data', add);
  return () => buf.trim().split('\n').slice(-2).join(' | ');
}

/** SIGTERM, then SIGKILL after graceMs; resolves once the child is gone. */
export function stopChild(child: ChildProcess | null, graceMs: number): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    child.kill('SIGTERM');
  });
}
