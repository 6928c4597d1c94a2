// `npm run bench:server`: the reference server's RSS, CPU and event-loop lag holding N idle devices, then M real-time voice sessions.
// Server and load each run in their own process (raised fd limit); every phase is bounded in time and count.
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { guardedSpawn } from '../scripts/guarded-spawn.ts';
import { pickFreePort } from '../scripts/process-control.ts';
import { cpuPercent, rssMiB } from '../scripts/proc-stats.ts';
import { serverLagP99Ms as lagP99Ms } from '../scripts/proc-sampler.ts';

const QUICK = process.env.BENCH_QUICK === '1';
const IDLE = QUICK ? [200] : [1000, 10_000];
const VOICE = QUICK ? [10] : [100, 500];
const WINDOW_MS = QUICK ? 3000 : 20_000;
const ROOT = new URL('../', import.meta.url).pathname;

function withFdLimit(cmd: string[], ipc = false): ChildProcess {
  return guardedSpawn(
    cmd[0]!,
    cmd.slice(1),
    {
      cwd: ROOT,
      stdio: ipc ? ['ignore', 'inherit', 'inherit', 'ipc'] : ['ignore', 'pipe', 'pipe'],
      env: { ...process.env },
    },
    65536,
  );
}

function ask(p: ChildProcess, msg: object, timeoutMs = 300_000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`load process did not answer ${JSON.stringify(msg)}`)), timeoutMs);
    p.once('message', (m: Record<string, unknown>) => {
      clearTimeout(t);
      if (m.ok) resolve(m);
      else reject(new Error(String(m.error)));
    });
    p.send(msg);
  });
}

interface Row {
  phase: string;
  idle: number;
  voice: number;
  server_rss_mib: number;
  server_cpu_pct: number;
  lag_p99_ms: number;
  sessions_completed?: number;
}

async function main() {
  const port = await pickFreePort();
  const httpUrl = `http://127.0.0.1:${port}`;
  const server = withFdLimit([
    process.execPath,
    'bin/wakestorm.mjs',
    'server',
    '--port',
    String(port),
    '--max-connections',
    '100000',
  ]);
  let out = '';
  server.stdout!.on('data', (d) => (out += d));
  server.stderr!.on('data', (d) => (out += d));
  for (let i = 0; i < 100 && !out.includes('listening'); i++) await new Promise((r) => setTimeout(r, 100));
  if (!out.includes('listening')) throw new Error(`server did not start: ${out}`);
  const serverPid = server.pid!; // bash exec'd into node: same pid
  process.env.TARGET = `ws://127.0.0.1:${port}`;
  const load = withFdLimit([process.execPath, '--import', 'tsx', 'bench/load-client.ts'], true);
  load.on('exit', (c) => c && c !== 0 && console.error(`load process exited ${c}`));
  const rows: Row[] = [];
  const measure = async (phase: string, idle: number, voice: number) => {
    await new Promise((r) => setTimeout(r, QUICK ? 500 : 3000));
    await lagP99Ms(httpUrl); // resets the lag histogram: the next read covers only the window
    const cpu = await cpuPercent(serverPid, WINDOW_MS);
    const row: Row = {
      phase,
      idle,
      voice,
      server_rss_mib: +rssMiB(serverPid).toFixed(1),
      server_cpu_pct: +cpu.toFixed(1),
      lag_p99_ms: +(await lagP99Ms(httpUrl)).toFixed(2),
    };
    if (voice) row.sessions_completed = Number((await ask(load, { cmd: 'stats' })).completed);
    rows.push(row);
    console.log(
      `${phase.padEnd(28)} rss=${row.server_rss_mib} MiB  cpu=${row.server_cpu_pct}% of a core  lag_p99=${row.lag_p99_ms} ms${voice ? `  sessions completed in window+settle: ${row.sessions_completed}` : ''}`,
    );
  };
  try {
    rows.push({
      phase: 'empty',
      idle: 0,
      voice: 0,
      server_rss_mib: +rssMiB(serverPid).toFixed(1),
      server_cpu_pct: 0,
      lag_p99_ms: 0,
    });
    for (const n of IDLE) {
      const t0 = Date.now();
      await ask(load, { cmd: 'idle', n });
      console.log(`connected ${n} idle devices in ${Date.now() - t0} ms`);
      await measure(`${n} idle`, n, 0);
    }
    const n = IDLE[IDLE.length - 1]!;
    for (const m of VOICE) {
      await ask(load, { cmd: 'voice', n: m });
      await measure(`${n} idle + ${m} voice sessions`, n, m);
    }
    // The same conversations in xiaozhi's dialect: a channel per conversation, Opus decoded for the VAD.
    for (const m of VOICE) {
      await ask(load, { cmd: 'xiaozhi', n: m });
      await measure(`${n} idle + ${m} xiaozhi Opus sessions`, n, m);
    }
  } finally {
    await ask(load, { cmd: 'stop' }).catch(() => load.kill('SIGKILL'));
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const dir = `${process.env.BENCH_RESULTS ?? `${ROOT}results`}/bench-server-${stamp}`;
  mkdirSync(dir, { recursive: true });
  const machine = {
    cores: cpus().length,
    cpu: cpus()[0]?.model,
    mem_gib: +(totalmem() / 2 ** 30).toFixed(1),
    node: process.version,
  };
  writeFileSync(
    `${dir}/bench.json`,
    JSON.stringify({ bench: 'server', quick: QUICK, window_ms: WINDOW_MS, machine, rows }, null, 2),
  );
  const md = [
    '| phase | server RSS (MiB) | server CPU (% of one core) | event-loop lag p99 (ms) |',
    '| --- | --- | --- | --- |',
    ...rows.map((r) => `| ${r.phase} | ${r.server_rss_mib} | ${r.server_cpu_pct} | ${r.lag_p99_ms} |`),
  ].join('\n');
  writeFileSync(`${dir}/bench.md`, `${md}\n`);
  console.log(`\n${md}\n\nmachine: ${JSON.stringify(machine)}\nwritten: ${dir}/bench.json`);
}

main().catch((e) => {
  console.error(`bench:server failed: ${(e as Error).message}`);
  process.exit(1);
});
