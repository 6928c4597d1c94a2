// Secrets (bearer tokens) handed to child processes through a private file, never a command line or a result file.
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pidAlive } from './process-control.ts';

export interface SecretFile {
  path: string;
  remove(): void;
}

const PREFIX = 'wakestorm-secret-';

/** Removes the secret folders of wakestorm processes that died without cleaning up (kill -9): their pid is in the name. */
export function sweepSecretFiles(root = tmpdir()): number {
  let removed = 0;
  for (const name of readdirSync(root)) {
    const m = new RegExp(`^${PREFIX}(\\d+)-`).exec(name);
    if (!m || pidAlive(Number(m[1]))) continue;
    rmSync(join(root, name), { recursive: true, force: true });
    removed++;
  }
  return removed;
}

/**
 * Writes `content` to a fresh 0600 file in a 0700 folder of its own, named with this process's pid; removed by
 * remove(), when this process exits, or (after a kill -9) by the next wakestorm that writes a secret.
 */
export function writeSecretFile(content: string): SecretFile {
  sweepSecretFiles();
  const dir = mkdtempSync(join(tmpdir(), `${PREFIX}${process.pid}-`));
  const path = join(dir, 'token');
  writeFileSync(path, `${content}\n`, { mode: 0o600 });
  const remove = () => rmSync(dir, { recursive: true, force: true });
  process.once('exit', remove);
  return { path, remove };
}

/** Hides the value after each --token / --token= in a command line kept in a result file. */
export function redactArgv(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (/^--(token|server-arg)$/.test(a) && i + 1 < argv.length && (a === '--token' || /--token/.test(argv[i + 1]!))) {
      out.push(a, '<redacted>');
      i++;
    } else out.push(a.replace(/(--token[= ])\S+/g, '$1<redacted>'));
  }
  return out;
}
