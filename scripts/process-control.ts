// Child processes and ports on loopback: a free port, a child waited on until its health URL answers, the tail of its
// output for an error line, and a stop that escalates from SIGTERM to SIGKILL.
import type { ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { WakestormError } from '../core/errors.ts';

/** Resolves to true if 127.0.0.1:port can be bound now. */
export function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

export async function pickFreePort(): Promise<number> {
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
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
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
