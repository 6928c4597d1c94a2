// Child-process helpers for tests: run the CLI, wait for a line, find free loopback ports, check a port is closed.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
export { pickFreePort as freePort } from '../../scripts/process-control.ts';

export const ROOT = new URL('../../', import.meta.url).pathname;
export const CLI = `${ROOT}bin/wakestorm.mjs`;

/** k6's summary metrics, as a test reads them. */
export type Metrics = Record<string, { values: Record<string, number> } | undefined>;

/** The run a `wakestorm run --results <results>` just finished (its `latest` link): run.json and k6's metrics. */
export function latestRun<R = { verdict: string }>(results: string): { dir: string; run: R; metrics: Metrics } {
  const dir = join(results, readlinkSync(join(results, 'latest')));
  const read = (f: string) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as unknown;
  return { dir, run: read('run.json') as R, metrics: (read('summary.json') as { metrics: Metrics }).metrics };
}

export function runCli(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env: { ...process.env, ...opts.env } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const t = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    p.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

export function spawnCli(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess & { output: () => string } {
  const p = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env: { ...process.env, ...env }, detached: true });
  let out = '';
  p.stdout.on('data', (d) => (out += d));
  p.stderr.on('data', (d) => (out += d));
  return Object.assign(p, { output: () => out });
}

export async function waitFor(pred: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error(`timeout waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** True when nothing accepts connections on 127.0.0.1:port. */
export function portClosed(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect(port, '127.0.0.1');
    sock.once('connect', () => {
      sock.destroy();
      resolve(false);
    });
    sock.once('error', () => resolve(true));
  });
}

export function exited(p: ChildProcess, timeoutMs = 15_000): Promise<number | null> {
  if (p.exitCode !== null) return Promise.resolve(p.exitCode);
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('process did not exit')), timeoutMs);
    p.once('exit', (code) => {
      clearTimeout(t);
      resolve(code);
    });
  });
}

/**
 * `wakestorm run smoke` of `devices` esp32-hotpin devices of a dialect, each waking once, against a server; its
 * results in a temporary folder of their own.
 */
export async function voiceFleet(url: string, dialect: string, devices: number, extra: string[] = []) {
  const results = mkdtempSync(join(tmpdir(), `wakestorm-fleet-${dialect}-`));
  const r = await runCli(
    ['run', 'smoke', '--devices', String(devices), '--duration', '25s', '--wake', 'once:1s-4s'].concat(
      ['--profile', 'esp32-hotpin', '--dialect', dialect, '--server-url', url, '--results', results, '--no-dashboard'],
      extra,
    ),
    { timeoutMs: 150_000 },
  );
  const { run, metrics } = latestRun<{ verdict: string }>(results);
  return { code: r.code, out: r.stdout + r.stderr, run, metrics: metrics as Metrics };
}
