// The runner never leaves a machine worse than it found it: a SIGTERM to the `npx` entry the docs tell users to type
// ends the whole command (npm does not forward it), and a server killed mid-run is the server's failure, cleaned up.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ROOT, freePort, portClosed, waitFor } from '../helpers/proc.ts';

const tmp = mkdtempSync(join(tmpdir(), 'wakestorm-runner-'));
const ours = () =>
  execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.includes(tmp) || l.includes('wakestorm-runner-marker'));

function npx(args: string[]) {
  const p = spawn('npx', ['wakestorm', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let out = '';
  p.stdout.on('data', (d) => (out += d));
  p.stderr.on('data', (d) => (out += d));
  return Object.assign(p, { output: () => out });
}

describe('a signal to the npx entry ends everything it started', () => {
  it('npx wakestorm server: SIGTERM to npx frees the port within seconds', async () => {
    const port = await freePort();
    const p = npx(['server', '--port', String(port), '--drain-ms', '500']);
    await waitFor(() => p.output().includes('listening'), 60_000, 'the server');
    process.kill(p.pid!, 'SIGTERM');
    await waitFor(() => portClosed(port), 8000, 'the port to be freed');
    const left = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.includes(`--port ${port}`));
    assert.deepEqual(left, []);
  });

  it('npx wakestorm run: SIGTERM to npx stops k6, Toxiproxy and the server, and the run is INVALID', async () => {
    const results = join(tmp, 'results');
    const p = npx(['run', 'smoke', '--devices', '5', '--duration', '60s', '--wake', 'off', '--results', results]);
    await waitFor(() => /k6 v[\d.]+ ->/.test(p.output()), 60_000, 'k6 to start');
    await new Promise((r) => setTimeout(r, 3000));
    const apiPort = Number(/toxiproxy\s+http:\/\/127\.0\.0\.1:(\d+)/.exec(p.output())![1]);
    const serverPid = Number(/server\s+http:\/\/127\.0\.0\.1:\d+ \(pid (\d+)\)/.exec(p.output())![1]);
    process.kill(p.pid!, 'SIGTERM');
    await waitFor(() => ours().length === 0, 20_000, 'every process of the run to be gone');
    await waitFor(() => portClosed(apiPort), 10_000, 'Toxiproxy to stop');
    await waitFor(
      () => !existsSync(`/proc/${serverPid}`) || /State:\s+Z/.test(readFileSync(`/proc/${serverPid}/status`, 'utf8')),
      10_000,
      'the server to stop',
    );
    await waitFor(() => existsSync(join(results, 'latest')), 5000, 'the results folder');
    const run = JSON.parse(readFileSync(join(results, readlinkSync(join(results, 'latest')), 'run.json'), 'utf8'));
    assert.equal(run.verdict, 'invalid');
    assert.match(run.invalid_reasons.join(' '), /interrupted/);
  });
});

describe('Ctrl-C at a terminal (SIGINT to the whole process group)', () => {
  it('reaches the CLI only: it stops k6, still scrapes the server, tears down in order, and the run is INVALID', async () => {
    const results = join(tmp, 'group-sigint');
    const p = spawn(
      process.execPath,
      [
        join(ROOT, 'bin/wakestorm.mjs'),
        'run',
        'smoke',
        '--devices',
        '5',
        '--duration',
        '60s',
        '--wake',
        'off',
        '--results',
        results,
      ],
      {
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      },
    );
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    await waitFor(() => /k6 v[\d.]+ ->/.test(out), 60_000, 'k6 to start');
    await new Promise((r) => setTimeout(r, 3000));
    const apiPort = Number(/toxiproxy\s+http:\/\/127\.0\.0\.1:(\d+)/.exec(out)![1]);
    // The terminal's Ctrl-C: the whole foreground group. The server and Toxiproxy run in groups of their own.
    process.kill(-p.pid!, 'SIGINT');
    const code = await new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
    assert.equal(code, 3, out);
    const dir = join(results, readlinkSync(join(results, 'latest')));
    // The server was alive for the scrape: its metrics are there, not "not reachable".
    assert.match(readFileSync(join(dir, 'server-metrics.txt'), 'utf8'), /voice_connections_opened_total \d+/);
    assert.ok(await portClosed(apiPort));
    assert.deepEqual(ours(), []);
  });
});

describe('a server killed during a chaos run', () => {
  it('is the server failing (FAIL), and nothing is left behind', async () => {
    const results = join(tmp, 'killed-server');
    const cut = join(tmp, 'cut.json');
    (await import('node:fs')).writeFileSync(cut, JSON.stringify([{ at: '20s', for: '2s', fault: 'cut' }]));
    const p = spawn(
      process.execPath,
      [
        join(ROOT, 'bin/wakestorm.mjs'),
        'run',
        'smoke',
        '--devices',
        '6',
        '--duration',
        '25s',
        '--wake',
        'off',
        '--timeline',
        cut,
        '--results',
        results,
      ],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    await waitFor(() => /k6 v[\d.]+ ->/.test(out), 60_000, 'k6 to start');
    await new Promise((r) => setTimeout(r, 4000));
    const serverPid = Number(/server\s+http:\/\/127\.0\.0\.1:\d+ \(pid (\d+)\)/.exec(out)![1]);
    const apiPort = Number(/toxiproxy\s+http:\/\/127\.0\.0\.1:(\d+)/.exec(out)![1]);
    process.kill(serverPid, 'SIGKILL');
    const code = await new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
    assert.equal(code, 99, out);
    assert.match(out, /the reference server \(pid \d+\) exited during the run \(signal SIGKILL\)/);
    const run = JSON.parse(readFileSync(join(results, readlinkSync(join(results, 'latest')), 'run.json'), 'utf8'));
    assert.equal(run.verdict, 'fail');
    assert.ok(
      run.slo_results.some(
        (r: { name: string; status: string }) => r.name === 'unplanned_drops' && r.status === 'fail',
      ),
    );
    assert.ok(await portClosed(apiPort), 'Toxiproxy stopped');
    assert.deepEqual(ours(), []);
  });
});

describe("the runner's house: disks, folders, secrets", () => {
  const cli = (args: string[], env: NodeJS.ProcessEnv = {}) => {
    const p = spawn(process.execPath, [join(ROOT, 'bin/wakestorm.mjs'), ...args], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...env },
    });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (out += d));
    const exit = new Promise<number | null>((r) => p.once('exit', (c) => r(c)));
    return { p, out: () => out, exit };
  };

  it('a full disk ends the run INVALID in one line, with no half-written result', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('mounting a small tmpfs needs root');
    const full = join(tmp, 'full-disk');
    mkdirSync(full, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=48k', 'tmpfs', full]);
    try {
      const r = cli(['run', 'smoke', '--devices', '5', '--duration', '8s', '--wake', 'once:1s-2s', '--results', full]);
      const code = await r.exit;
      assert.equal(code, 3, r.out());
      assert.match(r.out(), /VERDICT: INVALID/);
      assert.match(r.out(), /no space left on the device|k6 wrote no summary/);
      assert.doesNotMatch(r.out(), /\n\s+at .*\(node:/, 'no stack trace');
      // Whatever was written is whole: every run.json there parses.
      for (const f of execFileSync('find', [full, '-name', 'run.json'], { encoding: 'utf8' })
        .split('\n')
        .filter(Boolean))
        JSON.parse(readFileSync(f, 'utf8'));
    } finally {
      execFileSync('umount', ['-l', full]);
    }
    assert.deepEqual(ours(), []);
  });

  it('a results folder that cannot be made is one line naming the path and why, before anything starts', async () => {
    const file = join(tmp, 'a-file');
    writeFileSync(file, 'not a folder');
    const r = cli(['run', 'smoke', '--devices', '2', '--duration', '5s', '--results', join(file, 'results')]);
    const code = await r.exit;
    assert.equal(code, 1, r.out());
    assert.equal(r.out().trim().split('\n').length, 1, r.out());
    assert.match(r.out(), /cannot write .*a-file.*: a part of the path is not a folder/);
  });

  it('a token in the environment reaches no child, and kill -9 of the CLI leaves no process and (after the next start) no secret', async () => {
    const token = `env-token-${Math.random().toString(36).slice(2, 12)}`;
    const results = join(tmp, 'kill9');
    const r = cli(['run', 'smoke', '--devices', '3', '--duration', '60s', '--wake', 'off', '--results', results], {
      WAKESTORM_TOKEN: token,
    });
    await waitFor(() => /k6 v[\d.]+ ->/.test(r.out()), 60_000, 'k6 to start');
    await new Promise((res) => setTimeout(res, 2000));
    // Every process of the run: none has the token in its environment.
    const kids = execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => /k6 run|toxiproxy|wakestorm\.mjs server|scripts\/wakestorm\.ts server/.test(l))
      .map((l) => Number(l.trim().split(/\s+/)[0]));
    assert.ok(kids.length >= 2, 'k6, Toxiproxy and the server are running');
    for (const pid of kids) {
      let environ = '';
      try {
        environ = readFileSync(`/proc/${pid}/environ`, 'utf8');
      } catch {
        continue;
      }
      assert.ok(!environ.includes(token), `pid ${pid} has the token in its environment`);
    }
    const secrets = () => readdirSync(tmpdir()).filter((d) => d.startsWith(`wakestorm-secret-${r.p.pid}-`));
    assert.ok(secrets().length >= 1, 'the run keeps its token in private files');
    r.p.kill('SIGKILL');
    await r.exit;
    await waitFor(() => ours().length === 0, 20_000, 'every process of the run to be gone');
    // The next start that writes a secret removes what the killed one left.
    const { sweepSecretFiles } = await import('../../scripts/secret.ts');
    assert.ok(sweepSecretFiles() >= 1);
    assert.deepEqual(secrets(), []);
  });
});

/** The processes descended from pid, with their command lines. */
function descendants(pid: number): { pid: number; args: string }[] {
  const rows = execFileSync('ps', ['-eo', 'pid=,ppid=,args='], { encoding: 'utf8' })
    .split('\n')
    .map((l) => /^\s*(\d+)\s+(\d+)\s+(.*)$/.exec(l))
    .filter((m) => m !== null)
    .map((m) => ({ pid: Number(m[1]), ppid: Number(m[2]), args: m[3]! }));
  const out: { pid: number; args: string }[] = [];
  const walk = (p: number) => {
    for (const r of rows.filter((x) => x.ppid === p)) {
      out.push(r);
      walk(r.pid);
    }
  };
  walk(pid);
  return out;
}

describe('the tester watches all of itself: a process frozen for 8 s makes the run INVALID, named', () => {
  const cases: [process: RegExp, named: RegExp][] = [
    [/\/k6 run /, /^k6 stopped answering/],
    [/wakestorm-engine --listen/, /^the device engine \(pid \d+\) stopped answering/],
    [/toxiproxy-server/, /^Toxiproxy \(pid \d+\) stopped answering/],
  ];
  for (const [proc, named] of cases)
    it(`freezing ${proc.source}`, async () => {
      const results = join(tmp, `frozen-${cases.findIndex((c) => c[0] === proc)}`);
      const p = spawn(
        process.execPath,
        [join(ROOT, 'bin/wakestorm.mjs'), 'run', 'smoke', '--devices', '10', '--duration', '40s'].concat([
          '--results',
          results,
          '--no-dashboard',
        ]),
        { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let out = '';
      p.stdout.on('data', (d) => (out += d));
      p.stderr.on('data', (d) => (out += d));
      const exit = new Promise<number | null>((res) => p.once('exit', (code) => res(code)));
      await waitFor(() => /k6 v[\d.]+ ->/.test(out), 60_000, 'k6 to start');
      await new Promise((r) => setTimeout(r, 5000));
      const target = descendants(p.pid!).find((d) => proc.test(d.args));
      assert.ok(target, `no ${proc.source} among ${JSON.stringify(descendants(p.pid!))}`);
      const frozenAt = Date.now();
      process.kill(target.pid, 'SIGSTOP');
      let saidAt = 0;
      try {
        await waitFor(() => /stopped answering/.test(out), 15_000, 'the CLI to name the frozen process');
        saidAt = Date.now();
      } finally {
        await new Promise((r) => setTimeout(r, Math.max(0, 8000 - (Date.now() - frozenAt))));
        process.kill(target.pid, 'SIGCONT');
      }
      assert.ok(saidAt - frozenAt <= 15_000);
      assert.equal(await exit, 3, out);
      const run = JSON.parse(readFileSync(join(results, readlinkSync(join(results, 'latest')), 'run.json'), 'utf8'));
      assert.equal(run.verdict, 'invalid');
      assert.ok(
        (run.invalid_reasons as string[]).some((r) => named.test(r)),
        JSON.stringify(run.invalid_reasons),
      );
    });
});
