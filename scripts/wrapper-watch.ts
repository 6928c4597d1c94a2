// Nothing outlives the command the user typed: when a wrapper this CLI runs under (npx, npm exec, npm run, their
// `sh -c`) dies without passing its signal on, this process takes it as SIGTERM. npm does not forward SIGTERM to the
// script it runs, and CI systems cancel a job with exactly that signal.
import { readFileSync } from 'node:fs';

const WRAPPER =
  /(^|\/)(npm|npx)(\s|$)|npm-cli\.js|npx-cli\.js|^npm (exec|run|test|start)|^(\/bin\/|\/usr\/bin\/)?(sh|dash|bash) -c |node_modules\/\.bin\/tsx |tsx\/dist\/cli\.m?js /;

function cmdline(pid: number): string | null {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
  } catch {
    return null;
  }
}

function parentOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return null;
  }
}

/** The chain of wrapper processes above this one (closest first), up to the first process that is not a wrapper. */
export function wrapperAncestors(pid = process.pid): number[] {
  const out: number[] = [];
  let p = parentOf(pid);
  while (p && p > 1 && out.length < 8) {
    const cmd = cmdline(p);
    if (!cmd || !WRAPPER.test(cmd)) break;
    out.push(p);
    p = parentOf(p);
  }
  return out;
}

let stopping = false;

/** A command that is already stopping (its first signal came) is not signalled again when its wrapper goes. */
export function markStopping(): void {
  stopping = true;
}

/** Polls once a second; when a wrapper ancestor is gone, raises SIGTERM in this process (its handlers run). */
export function exitWithWrappers(): void {
  const watched = wrapperAncestors();
  if (!watched.length) return;
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const timer = setInterval(() => {
    if (watched.every(alive)) return;
    clearInterval(timer);
    if (stopping) return;
    process.stderr.write('wakestorm: the command that started this one is gone: stopping\n');
    process.kill(process.pid, 'SIGTERM');
  }, 1000);
  timer.unref();
}
