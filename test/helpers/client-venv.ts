// A public Python client or server of a protocol, in a venv made once under wakestorm's cache from its folder's pinned
// requirements (clients/<name>/requirements.txt): python3 -m venv, then pip install, bounded in time. The venv's name
// carries a hash of the requirements, so a new pin makes a new venv.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { cacheDir } from '../../scripts/tools.ts';
import { ROOT } from './proc.ts';

export interface ClientVenv {
  /** clients/<name>/: the scripts beside the requirements. */
  dir: string;
  python: string;
}

/** The venv for clients/<name>, made (or made again, when `probe` fails to import) and ready. */
export function clientVenv(name: string, probe: string): ClientVenv {
  const dir = join(ROOT, 'clients', name);
  const requirements = join(dir, 'requirements.txt');
  const pins = createHash('sha256').update(readFileSync(requirements)).digest('hex').slice(0, 12);
  const venv = join(cacheDir(), 'clients', `${name}-${pins}`);
  const python = join(venv, 'bin', 'python');
  const works = () => {
    try {
      execFileSync(python, ['-c', `import ${probe}`], { stdio: 'pipe', timeout: 120_000 });
      return true;
    } catch {
      return false;
    }
  };
  if (existsSync(python) && works()) return { dir, python };
  execFileSync('python3', ['-m', 'venv', '--clear', venv], { stdio: 'pipe', timeout: 120_000 });
  execFileSync(python, ['-m', 'pip', 'install', '-q', '--disable-pip-version-check', '-r', requirements], {
    stdio: 'pipe',
    timeout: 600_000,
  });
  if (!works()) throw new Error(`clients/${name}: its venv was made but ${probe} does not import`);
  return { dir, python };
}
