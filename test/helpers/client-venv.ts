// A public Python client or server of a protocol, in a venv made once under wakestorm's cache from its folder's pinned
// requirements (clients/<name>/requirements.txt): python3 -m venv, then pip install, bounded in time. The venv's name
// carries a hash of the requirements, so a new pin makes a new venv.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
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

/** A voice server of clients/ (clients/turns.py): its URL and the event lines it printed. */
export interface PyServer {
  url: string;
  events: { event: string; last_voiced_at?: number; first_audio_at?: number; why?: string }[];
  close(): Promise<void>;
}

/** clients/<name>/serve.py under the venv's python, up when it prints its port; its event lines collected. */
export function startPyServer(venv: ClientVenv, args: string[]): Promise<PyServer> {
  return new Promise((resolve, reject) => {
    const p: ChildProcess = spawn(venv.python, [join(venv.dir, 'serve.py'), ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    p.stderr!.on('data', (d) => (err = (err + d).slice(-4000)));
    const events: PyServer['events'] = [];
    const up = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`serve.py did not listen in 60 s: ${err}`));
    }, 60_000);
    p.on('exit', (code) => reject(new Error(`serve.py exited ${code}: ${err}`)));
    createInterface({ input: p.stdout! }).on('line', (line) => {
      const e = JSON.parse(line) as PyServer['events'][number] & { port?: number };
      if (e.event !== 'listening') return void events.push(e);
      clearTimeout(up);
      resolve({
        url: `ws://127.0.0.1:${e.port}`,
        events,
        close: () =>
          new Promise<void>((done) => {
            if (p.exitCode !== null) return done();
            p.removeAllListeners('exit');
            p.once('exit', () => done());
            p.kill('SIGTERM');
            setTimeout(() => p.kill('SIGKILL'), 5000).unref();
          }),
      });
    });
  });
}

/** How many times a server said an event. */
export const countEvents = (s: PyServer, event: string) => s.events.filter((e) => e.event === event).length;

/** The server's own median of its turns: the last voiced audio's arrival to the first reply audio's send. */
export function serverMedian(s: PyServer): number {
  const own = s.events
    .filter((e) => e.event === 'turn')
    .map((e) => e.first_audio_at! - e.last_voiced_at!)
    .sort((a, b) => a - b);
  return own[Math.floor(own.length / 2)] ?? NaN;
}
