// A run's folder under results/: claimed atomically as a hidden partial folder, written, then renamed into place
// with results/latest pointing at it, so no run folder is ever half-written.
import { execFileSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { WakestormError } from '../core/errors.ts';
import { pidAlive } from './process-control.ts';

export interface RunDir {
  runId: string;
  /** Where the run writes: results/.<run-id>.partial */
  dir: string;
  /** Where it ends up: results/<run-id> */
  finalDir: string;
}

/** A filesystem error in words: which path, and what (no space, read-only, permission); else the system's message. */
export function fsProblem(e: unknown, path?: string): string {
  const err = e as NodeJS.ErrnoException;
  const what: Record<string, string> = {
    ENOSPC: 'no space left on the device',
    EDQUOT: 'the disk quota is used up',
    EROFS: 'the filesystem is read-only',
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    ENOTDIR: 'a part of the path is not a folder',
    EFBIG: 'the file is too large for the filesystem or the file-size limit',
  };
  return `cannot write ${err.path ?? path ?? 'a result file'}: ${(err.code && what[err.code]) ?? err.message ?? String(e)}`;
}

/** A result file written whole or not at all: to a temporary name, then renamed; a failure leaves nothing half-written. */
export function writeResult(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    writeFileSync(tmp, text);
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new WakestormError(fsProblem(e, path), 1);
  }
}

/** `smoke-20261129-053000` for a scenario started at that moment (UTC). */
export function runIdFor(scenario: string, at: Date): string {
  return `${scenario}-${at.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15)}`;
}

/** The file in a partial run folder that names the process writing it. */
export const OWNER = '.owner';

/**
 * Removes the partial folders under `root` that no live process owns (their run was killed before it could finish
 * or clean up); a folder without an owner file, from before owners were written, once it is a day old.
 */
export function sweepPartialRuns(root: string): number {
  let removed = 0;
  if (!existsSync(root)) return 0;
  for (const name of readdirSync(root)) {
    if (!/^\..+\.partial$/.test(name)) continue;
    const dir = join(root, name);
    let stale: boolean;
    try {
      stale = !pidAlive(Number(readFileSync(join(dir, OWNER), 'utf8').trim()) || -1);
    } catch {
      stale = Date.now() - statSync(dir).mtimeMs > 86_400_000;
    }
    if (stale) {
      rmSync(dir, { recursive: true, force: true });
      removed++;
    }
  }
  return removed;
}

/**
 * Claims a fresh run id and its hidden partial folder. mkdir is atomic: two runs started in the same second never
 * share a folder (the second gets -2, -3, …).
 */
export function claimRunDir(root: string, base: string): RunDir {
  mkdirSync(root, { recursive: true });
  sweepPartialRuns(root);
  for (let i = 1; i < 10_000; i++) {
    const runId = i === 1 ? base : `${base}-${i}`;
    const dir = join(root, `.${runId}.partial`);
    const finalDir = join(root, runId);
    if (existsSync(finalDir)) continue;
    try {
      mkdirSync(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw e;
    }
    // A run that finished between the two checks took this id: leave it to it.
    if (existsSync(finalDir)) {
      rmdirSync(dir);
      continue;
    }
    // Whose it is: a partial folder whose owner died (kill -9) is removed by the next wakestorm (sweepPartialRuns).
    writeFileSync(join(dir, OWNER), String(process.pid));
    return { runId, dir, finalDir };
  }
  throw new WakestormError(`no free run id under ${root} for ${base}`, 2);
}

/** Moves the finished run into place and points results/latest at it (both renames: never a broken link). */
export function publishRunDir(root: string, d: RunDir): void {
  rmSync(join(d.dir, OWNER), { force: true });
  renameSync(d.dir, d.finalDir);
  const latest = join(root, 'latest');
  const tmpLink = join(root, `.latest-${process.pid}`);
  rmSync(tmpLink, { force: true });
  symlinkSync(d.runId, tmpLink);
  renameSync(tmpLink, latest);
}

/** A JSON file, or null when it is missing or unreadable. */
export function readJson<T = unknown>(path: string): T | null {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch {
    return null;
  }
}

export function gitCommit(cwd: string): string | null {
  try {
    return execFileSync('git', ['rev-parse', 'HEAD'], {
      cwd,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
  } catch {
    return null;
  }
}

/** Rows as CSV: a header of every field, then one line a row; text with a comma or quote is quoted. */
export function toCsv(rows: Record<string, unknown>[]): string {
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const cell = (v: unknown) => {
    const t = v === undefined || v === null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v as string);
    return /[",\n]/.test(t) ? `"${t.replace(/"/g, '""')}"` : t;
  };
  return `${[cols.join(','), ...rows.map((r) => cols.map((c) => cell(r[c])).join(','))].join('\n')}\n`;
}
