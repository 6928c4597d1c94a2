// Runs k6 as a child process with the project's environment, and reads back the summary it wrote.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { guardedSpawn } from './guarded-spawn.ts';
import { k6Env, requireTools } from './tools.ts';

export interface K6Result {
  code: number | null;
  stdout: string;
  stderr: string;
  /** k6's handleSummary data (metrics with values and thresholds), or null if k6 wrote none. */
  summary: { metrics: Record<string, { type: string; values: Record<string, number>; thresholds?: Record<string, { ok: boolean }> }> } | null;
}

export interface K6RunOptions {
  script: string;
  vars?: Record<string, string | number>;
  env?: Record<string, string>;
  args?: string[];
  /** Called with each output chunk (progress). */
  onOutput?: (chunk: string) => void;
  timeoutMs?: number;
  /** Where the summary goes; a temp file when absent. */
  summaryPath?: string;
  signal?: AbortSignal;
}

export function runK6(opts: K6RunOptions): Promise<K6Result> {
  const tools = requireTools();
  const tmp = opts.summaryPath ? null : mkdtempSync(join(tmpdir(), 'wakestorm-k6-'));
  const summaryPath = opts.summaryPath ?? join(tmp!, 'summary.json');
  const args = ['run', '--quiet', ...(opts.args ?? [])];
  for (const [k, v] of Object.entries({ ...opts.vars, SUMMARY_JSON: summaryPath })) args.push('-e', `${k}=${v}`);
  args.push(opts.script);
  return new Promise((resolve) => {
    const p = guardedSpawn(tools.k6, args, { env: k6Env(opts.env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout!.on("data", (d) => {
      stdout += d;
      opts.onOutput?.(d.toString());
    });
    p.stderr!.on("data", (d) => {
      stderr += d;
      opts.onOutput?.(d.toString());
    });
    const kill = () => p.kill('SIGINT');
    opts.signal?.addEventListener('abort', kill);
    const t = opts.timeoutMs ? setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs) : null;
    p.on('close', (code) => {
      if (t) clearTimeout(t);
      opts.signal?.removeEventListener('abort', kill);
      let summary: K6Result['summary'] = null;
      try {
        summary = JSON.parse(readFileSync(summaryPath, 'utf8'));
      } catch {
        /* k6 failed before the summary */
      }
      if (tmp) rmSync(tmp, { recursive: true, force: true });
      resolve({ code, stdout, stderr, summary });
    });
  });
}
