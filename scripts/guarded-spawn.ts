// Spawns children that die with us: `setpriv --pdeathsig TERM` (util-linux) asks the kernel to send SIGTERM to the
// child when this process dies, even by SIGKILL, so a killed `wakestorm run` leaves no k6, server or Toxiproxy behind.
// setpriv execs the command, so the pid is the command's own (benches sample it).
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync } from 'node:fs';

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p)) ?? null;

/** The argv prefix that ties a command's life to ours (empty where setpriv is missing). */
function deathTie(): string[] {
  return SETPRIV ? [SETPRIV, '--pdeathsig', 'TERM', '--'] : [];
}

/** Secrets a user may give the CLI in its environment: no child inherits them (each gets what it needs in a file). */
const SECRET_ENV = ['WAKESTORM_TOKEN', 'TOKEN'];

/** An environment for a child: `env` without the user's secrets. */
export function withoutSecrets(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out = { ...env };
  for (const k of SECRET_ENV) delete out[k];
  return out;
}

export function guardedSpawn(cmd: string, args: string[], spawnOpts: SpawnOptions, fdLimit?: number): ChildProcess {
  const opts = { ...spawnOpts, env: withoutSecrets(spawnOpts.env ?? process.env) };
  const tie = deathTie();
  if (fdLimit) {
    // bash raises the open-file limit for this child only, then execs (same pid) into the tied command.
    const line = `ulimit -n ${fdLimit} 2>/dev/null || ulimit -n $(ulimit -Hn); exec "$@"`;
    return spawn('bash', ['-c', line, 'wakestorm-child', ...tie, cmd, ...args], opts);
  }
  return tie.length ? spawn(tie[0]!, [...tie.slice(1), cmd, ...args], opts) : spawn(cmd, args, opts);
}
