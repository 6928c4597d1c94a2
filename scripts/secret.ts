// Secrets (bearer tokens) handed to child processes through a private file, never a command line or a result file.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface SecretFile {
  path: string;
  remove(): void;
}

/** Writes `content` to a fresh 0600 file in a 0700 folder of its own; removed by remove() or when this process exits. */
export function writeSecretFile(content: string): SecretFile {
  const dir = mkdtempSync(join(tmpdir(), 'wakestorm-secret-'));
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
