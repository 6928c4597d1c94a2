// The default gate against servers with known bugs, a healthy server, and a broken tester: each bug FAILs on the right
// SLO with the right culprit, the healthy server PASSes the same scenario, and a tester fault is INVALID.
// Real k6 through real Toxiproxy (`wakestorm run --server-url`), the buggy server a ws man in the middle in front of a
// real reference server in this process.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ServerConfig } from '../../server/config.ts';
import { PROFILES } from '../../core/profiles.ts';
import { startBuggyServer, type Bug } from '../helpers/buggy-server.ts';
import { exited, freePort, portClosed, runCli, spawnCli, waitFor } from '../helpers/proc.ts';

const tmp = mkdtempSync(join(tmpdir(), 'wakestorm-verdict-'));
const file = (name: string, body: unknown) => {
  const p = join(tmp, name);
  writeFileSync(p, typeof body === 'string' ? body : JSON.stringify(body));
  return p;
};
const results = join(tmp, 'results');

// Firmware profiles with their real behaviour on a shorter clock, so a bug shows within a short run.
const base = {
  connect: 'path',
  resume: false,
  frame_bytes: 640,
  end_of_speech: 'explicit',
  playback_prebuffer_ms: 200,
};
/** web-heartbeat (JSON ping from the client), pinging every 3 s instead of 20 s. */
const WEB = file('web-heartbeat-3s.json', {
  ...base,
  name: 'web-heartbeat-3s',
  keepalive: { answer_server_pings: false, send: 'json-ping', interval_ms: 3000 },
  liveness: { detect: 'close', timeout_ms: 0, check_ms: 0 },
  reconnect: { policy: 'fixed', base_ms: 5000, cap_ms: 5000, max_attempts: 1, on: 'abnormal' },
});
/** react-avatar (silence watchdog), 6 s of silence instead of 60 s. */
const AVATAR = file('react-avatar-6s.json', {
  ...base,
  name: 'react-avatar-6s',
  keepalive: { answer_server_pings: true, send: 'none', interval_ms: 0 },
  liveness: { detect: 'silence', timeout_ms: 6000, check_ms: 2000 },
  reconnect: { policy: 'exponential', base_ms: 1000, cap_ms: 30_000, max_attempts: 10, on: 'abnormal' },
});

/** recommended, interrupting every reply 300 ms after it starts (the dialect's abort: `cancel`). */
const BARGE = file('recommended-barge.json', { ...PROFILES.recommended, name: 'recommended-barge', barge_in_ms: 300 });

interface Outcome {
  code: number | null;
  out: string;
  dir: string;
  run: {
    verdict: string;
    exit_code: number;
    verdict_line: string;
    invalid_reasons: string[];
    fail_reasons: string[];
    findings?: string[];
    slo_results: { name: string; status: string; culprits: string[] }[];
    incomplete: boolean;
  };
  junit: string;
}

function latest(root = results): { dir: string; run: Outcome['run']; junit: string } {
  const dir = join(root, readlinkSync(join(root, 'latest')));
  return {
    dir,
    run: JSON.parse(readFileSync(join(dir, 'run.json'), 'utf8')),
    junit: readFileSync(join(dir, 'junit.xml'), 'utf8'),
  };
}

/** `wakestorm run` against a server with `bugs` (none: the healthy reference server behind the same middleman). */
let gates = 0;
async function gate(bugs: Bug[], args: string[], upstream: Partial<ServerConfig>): Promise<Outcome> {
  const server = await startBuggyServer({ bugs, upstream });
  // Each gate has its own results root: gates run side by side and each reads its own `latest`.
  const root = join(results, `gate-${++gates}`);
  try {
    const r = await runCli(['run', ...args, '--server-url', server.url, '--results', root, '--no-dashboard'], {
      timeoutMs: 150_000,
    });
    const out = r.stdout + r.stderr;
    return { code: r.code, out, ...latest(root) };
  } finally {
    await server.close();
  }
}

const status = (o: Outcome, slo: string) => o.run.slo_results.find((r) => r.name === slo)?.status;
const culprits = (o: Outcome, slo: string) => o.run.slo_results.find((r) => r.name === slo)?.culprits.join('; ') ?? '';

/** Asserts FAIL (exit 99) with `slo` breached, in the console, run.json and JUnit. */
function assertFails(o: Outcome, slo: string, culprit: RegExp): void {
  assert.equal(o.code, 99, o.out);
  assert.equal(o.run.verdict, 'fail');
  assert.equal(status(o, slo), 'fail', `${slo} should fail: ${o.run.verdict_line}`);
  assert.match(culprits(o, slo) + o.run.fail_reasons.join(' '), culprit);
  assert.match(o.out, new RegExp(`VERDICT: FAIL \\([^)]*${slo}`));
  assert.match(o.junit, new RegExp(`name="${slo} [^"]*">\\s*<failure message="[^"]*"`));
}

function assertPasses(o: Outcome): void {
  assert.equal(o.code, 0, o.out);
  assert.equal(o.run.verdict, 'pass');
  assert.match(o.out, /VERDICT: PASS/);
  assert.doesNotMatch(o.junit, /<failure|<error/);
}

const FAST: Partial<ServerConfig> = { sttMs: 50, llmMs: 50, keepaliveMs: 2000 };
const SMOKE = ['smoke', '--devices', '12', '--duration', '16s', '--wake', 'once:1s-3s'];

after(() => {
  // Nothing of ours may outlive the suite.
  const left = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.includes(tmp));
  assert.deepEqual(left, []);
});

describe('the default gate against server bugs', () => {
  // Wakes at 1-3.5 s, 3 s of speech, then 6 s of STT: every session is thinking when the link is cut at 6.5-7.5 s.
  const cut = file('cut.json', [{ at: '6500ms', for: '1s', fault: 'cut' }]);
  const cutArgs = [
    'smoke',
    '--devices',
    '12',
    '--duration',
    '22s',
    '--wake',
    'once:1s-1500ms',
    '--profile',
    'recommended',
    '--timeline',
    cut,
    '--slo',
    'response_p95=off',
  ];
  const slowStt: Partial<ServerConfig> = { sttMs: 6000, llmMs: 50 };
  const cases = {
    healthy: () => gate([], [...SMOKE, '--profile', `recommended:1,${WEB}:1,${AVATAR}:1,${BARGE}:1`], FAST),
    noWakeAck: () => gate(['no-wake-ack'], [...SMOKE, '--profile', 'recommended'], FAST),
    jsonPing: () => gate(['close-on-json-ping'], [...SMOKE, '--profile', `recommended:1,${WEB}:1`], FAST),
    noKeepalive: () =>
      gate(
        ['no-keepalive'],
        [
          'smoke',
          '--devices',
          '12',
          '--duration',
          '20s',
          '--wake',
          'once:1s-3s',
          '--profile',
          `recommended:1,${AVATAR}:1`,
        ],
        FAST,
      ),
    refuse: () => gate(['refuse-share'], [...SMOKE, '--profile', 'recommended'], FAST),
    dropAfter: () => gate(['drop-after-connect'], [...SMOKE, '--profile', 'recommended'], FAST),
    slowReply: () => gate(['slow-reply'], [...SMOKE, '--profile', 'recommended'], FAST),
    ignoreAbort: () => gate(['ignore-abort'], [...SMOKE, '--profile', `recommended:1,${BARGE}:1`], FAST),
    cutHealthy: () => gate([], cutArgs, slowStt),
    forgetResume: () => gate(['forget-resume'], cutArgs, slowStt),
    stutter: () => gate(['stutter-reply'], [...SMOKE, '--profile', 'recommended'], FAST),
    short: () => gate(['short-reply'], [...SMOKE, '--profile', 'recommended'], FAST),
    renamed: () => gate(['rename-reply-start'], [...SMOKE, '--profile', 'recommended'], FAST),
    earlyReply: () => gate(['early-reply'], [...SMOKE, '--profile', 'recommended'], FAST),
    // A server that waits 1.2 s of silence before it calls the speech over: the user waits for it, so the latency must
    // show it. esp32-hotpin leaves the end of speech to the server's VAD (an explicit end would cut the wait short).
    slowEndpointing: () => gate([], [...SMOKE, '--profile', 'esp32-hotpin'], { ...FAST, vadSilenceMs: 1200 }),
  };
  const o = {} as Record<keyof typeof cases, Outcome>;
  before(async () => {
    // Small fleets, three runs at a time: the suite takes a third of the time and no run starves another.
    const names = Object.keys(cases) as (keyof typeof cases)[];
    for (let i = 0; i < names.length; i += 3) {
      await Promise.all(names.slice(i, i + 3).map(async (n) => (o[n] = await cases[n]())));
    }
  });

  it('passes the healthy server with every profile the bugs below hurt', () => assertPasses(o.healthy));

  it('fails a server that answers the wake word before the user speaks on early_replies, never as a fast reply', () => {
    assertFails(o.earlyReply, 'early_replies', /answered before the user finished speaking: a median \d+% into/);
    // The early answers are timed for nothing: the only response samples are the real replies, after the speech.
    const summary = JSON.parse(readFileSync(join(o.earlyReply.dir, 'summary.json'), 'utf8')) as {
      metrics: Record<string, { values: Record<string, number> } | undefined>;
    };
    const resp = summary.metrics['response_latency{chaos:steady}']?.values;
    assert.ok(!resp?.count || resp.min! > 100, `a response sample from an early answer: ${JSON.stringify(resp)}`);
  });

  it('fails a server that never acknowledges a wake on wake_success, in the wake phase', () => {
    assertFails(o.noWakeAck, 'wake_success', /profile recommended 0%.*phase wake/);
    assert.equal(status(o.noWakeAck, 'wake_ack_p95'), 'fail');
    assert.match(o.noWakeAck.run.verdict_line, /wake_ack_latency\{chaos:steady\}: 12 wakes, 0 acknowledged/);
  });

  it('fails a server that closes on a JSON heartbeat on unplanned_drops, naming web-heartbeat and 1011', () =>
    assertFails(
      o.jsonPing,
      'unplanned_drops',
      /profile web-heartbeat-3s \d+.*close code 1011 \(internal error\).*the server closed the link/,
    ));

  it("fails a server that sends no keepalive on unplanned_drops: the avatar's silence watchdog fires", () =>
    assertFails(o.noKeepalive, 'unplanned_drops', /profile react-avatar-6s.*liveness check fired/));

  it('fails a server that refuses a share of upgrades on connect_success', () =>
    assertFails(o.refuse, 'connect_success', /phase connect: the upgrade was refused/));

  it('fails a server that drops every link a second after connected on unplanned_drops (1006)', () =>
    assertFails(o.dropAfter, 'unplanned_drops', /close code 1006.*TCP connection ended with no close frame/));

  it('fails a server that replies too slowly on response_p95, in the reply phase', () => {
    assertFails(o.slowReply, 'response_p95', /phase reply/);
    assert.equal(status(o.slowReply, 'wake_ack_p95'), 'pass');
  });

  it('fails a server that ignores an abort on barge_in_stop_p95, naming the profile that barged in', () => {
    assertFails(o.ignoreAbort, 'barge_in_stop_p95', /profile recommended-barge \d+\.\d ms.*phase barge-in/);
    assert.equal(status(o.ignoreAbort, 'response_p95'), 'pass');
    assert.equal(status(o.healthy, 'barge_in_stop_p95'), 'pass', 'the healthy server stops when asked');
  });

  it('passes the healthy server through a cut while every session waits for its reply: sessions resume, the drops were planned', () =>
    assertPasses(o.cutHealthy));

  it('fails a server that forgets resume tokens on resume_success: the sessions it should have kept are lost', () => {
    assertFails(o.forgetResume, 'resume_success', /profile recommended 0%.*phase resume/);
    assert.equal(status(o.forgetResume, 'unplanned_drops'), 'pass', 'the cut was planned');
  });

  it('fails a server that streams its reply slower than real time on reply_stutter_rate, in the playback phase', () =>
    assertFails(o.stutter, 'reply_stutter_rate', /profile recommended 100%.*phase playback/));

  it('fails a server that ends each reply short of what it announced on reply_truncated_rate', () =>
    assertFails(o.short, 'reply_truncated_rate', /profile recommended 100%.*phase playback/));

  it('fails a server that speaks a message the dialect does not match, naming the message', () =>
    assertFails(
      o.renamed,
      'response_p95',
      /the server sent \d+ message\(s\) \(`audio_stream_start`\) that the dialect does not match/,
    ));

  it("fails a server whose endpointing is slower than the user's silence on response_p95, naming the endpointing", () =>
    assertFails(o.slowEndpointing, 'response_p95', /endpointing p95 1[2-4]\d\d ms/));
});

describe('auth', () => {
  it('--token-file gives the devices and the reference server one token, which appears on no command line and in no result', async () => {
    const token = 'tk-' + Math.random().toString(36).slice(2, 14);
    const tf = file('token', `${token}\n`);
    const p = spawnCli(['run', ...SMOKE, '--token-file', tf, '--results', results, '--no-dashboard']);
    const seen: string[] = [];
    // Sample every process's command line while the run lasts.
    const scan = setInterval(() => {
      for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
        try {
          const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
          if (cmd.includes(token)) seen.push(cmd.replace(/\0/g, ' '));
        } catch {
          /* gone */
        }
      }
    }, 500);
    const code = await exited(p, 120_000);
    clearInterval(scan);
    assert.equal(code, 0, p.output());
    assert.deepEqual(seen, []);
    const { dir, run } = latest();
    assert.equal(run.verdict, 'pass');
    const grep = spawnSync('grep', ['-rl', '--binary-files=text', token, dir], { encoding: 'utf8' });
    assert.equal(grep.stdout.trim(), '', 'no result file holds the token');
    assert.equal(grep.status, 1, 'grep ran and found nothing');
    assert.ok(existsSync(join(dir, 'samples.json.gz')));
  });

  // Both engines: the k6 device's socket hears only "bad handshake"; k6's own session record gives the status.
  for (const engine of ['native', 'k6'])
    it(`a wrong token is INVALID naming HTTP 401 (exit 3), never a PASS: --engine ${engine}`, async () => {
      const tf = file('server-tokens', 'the-server-only-token\n');
      const r = await runCli(
        ['run', ...SMOKE, '--server-arg', `--tokens-file=${tf}`, '--results', results, '--no-dashboard'].concat([
          '--engine',
          engine,
        ]),
        { timeoutMs: 120_000 },
      );
      assert.equal(r.code, 3, r.stdout + r.stderr);
      const { run } = latest();
      assert.equal(run.verdict, 'invalid');
      assert.equal(run.slo_results.find((x) => x.name === 'connect_success')!.status, 'fail');
      assert.match(run.verdict_line, /refused the devices' credentials on every connect \(HTTP 401 ×\d+\)/);
      assert.doesNotMatch(r.stdout, /VERDICT: PASS/);
    });
});

describe('a broken tester is INVALID, not FAIL', () => {
  it('an unreachable --server-url stops before anything starts: one line, exit 1, no PASS, no JUnit', async () => {
    const before = existsSync(results) ? readdirSync(results) : [];
    const r = await runCli(
      ['run', 'smoke', '--server-url', `ws://127.0.0.1:${await freePort()}`, '--results', results],
      { timeoutMs: 30_000 },
    );
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^wakestorm: cannot reach --server-url ws:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)/);
    assert.doesNotMatch(r.stdout, /PASS/);
    assert.deepEqual(readdirSync(results), before);
  });

  it('a --server-url off loopback needs ALLOW_REMOTE=1 on purpose, as docs/ci.md says: one line, exit 2', async () => {
    const before = existsSync(results) ? readdirSync(results) : [];
    // 192.0.2.0/24 is TEST-NET-1 (RFC 5737): nothing is sent there, the refusal comes first.
    const r = await runCli(['run', 'smoke', '--server-url', 'ws://192.0.2.1:9000', '--results', results], {
      timeoutMs: 30_000,
      env: { ALLOW_REMOTE: '' },
    });
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(r.stderr, /^wakestorm: --server-url ws:\/\/192\.0\.2\.1:9000 is not loopback: set ALLOW_REMOTE=1/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.deepEqual(readdirSync(results), before);
  });

  it('a timeline that restarts the server is refused with --server-url before the stack starts: exit 2', async () => {
    const before = existsSync(results) ? readdirSync(results) : [];
    const r = await runCli(
      [
        'run',
        'flaky-network',
        '--timeline',
        'server-restart',
        '--server-url',
        'ws://127.0.0.1:9',
        '--results',
        results,
      ],
      { timeoutMs: 30_000 },
    );
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(
      r.stderr,
      /has a server-restart fault, which wakestorm can apply only to the reference server it starts/,
    );
    assert.doesNotMatch(r.stdout, /starting the stack/);
    assert.deepEqual(readdirSync(results), before);
  });

  it('a saturated generator (2000 talking devices in one VU) is INVALID with the bound it broke', async () => {
    const r = await runCli(
      [
        'run',
        'smoke',
        '--devices',
        '2000',
        '--devices-per-vu',
        '2000',
        '--duration',
        '15s',
        '--wake',
        'poisson:2s',
        '--results',
        results,
        '--no-dashboard',
      ],
      { timeoutMs: 150_000 },
    );
    assert.equal(r.code, 3, r.stdout + r.stderr);
    const { run, junit } = latest();
    assert.equal(run.verdict, 'invalid');
    assert.match(
      run.invalid_reasons.join(' '),
      /generator saturated: (device-engine timer lag p95 \d+ ms > bound 50 ms|\d+ of \d+ uplink audio frames sent late)/,
    );
    assert.match(r.stdout, /VERDICT: INVALID/);
    assert.match(junit, /errors="1"/);
    assert.doesNotMatch(junit, /<failure/);
  });

  /** Starts a chaos run in the background and waits until k6 runs; returns its handle and the pids it printed. */
  async function startRun(extra: string[] = []) {
    const p = spawnCli([
      'run',
      'smoke',
      '--devices',
      '10',
      '--duration',
      '40s',
      '--wake',
      'poisson:5s',
      '--timeline',
      file('late-cut.json', [{ at: '30s', for: '2s', fault: 'cut' }]),
      '--results',
      results,
      '--no-dashboard',
      ...extra,
    ]);
    await waitFor(() => /k6 v[\d.]+ ->/.test(p.output()), 30_000, 'k6 to start');
    await new Promise((r) => setTimeout(r, 5000));
    const toxiPid = Number(/toxiproxy\s+http:\/\/127\.0\.0\.1:\d+ \(pid (\d+)\)/.exec(p.output())![1]);
    const apiPort = Number(/toxiproxy\s+http:\/\/127\.0\.0\.1:(\d+)/.exec(p.output())![1]);
    const serverPid = Number(/server\s+http:\/\/127\.0\.0\.1:\d+ \(pid (\d+)\)/.exec(p.output())![1]);
    return { p, toxiPid, apiPort, serverPid };
  }

  async function assertClean(t: { toxiPid: number; serverPid: number; apiPort: number }) {
    const alive = (pid: number) =>
      existsSync(`/proc/${pid}`) && !/State:\s+Z/.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
    await waitFor(() => !alive(t.toxiPid) && !alive(t.serverPid), 10_000, 'the stack to be gone');
    assert.ok(await portClosed(t.apiPort));
    const k6 = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.includes(results) && l.includes('k6'));
    assert.deepEqual(k6, [], 'no k6 left');
  }

  it('a Toxiproxy that dies mid-run makes the run INVALID at once, naming it', async () => {
    const t = await startRun();
    const t0 = Date.now();
    process.kill(t.toxiPid, 'SIGKILL');
    const code = await exited(t.p, 60_000);
    assert.equal(code, 3, t.p.output());
    assert.ok(Date.now() - t0 < 25_000, 'the run stopped instead of running on against a dead proxy');
    const { run, junit } = latest();
    assert.equal(run.verdict, 'invalid');
    assert.match(
      run.invalid_reasons.join(' '),
      /toxiproxy-server \(pid \d+\) exited during the run \(signal SIGKILL\)/,
    );
    assert.match(junit, /<error message="toxiproxy-server/);
    await assertClean(t);
  });

  it('a k6 that is killed makes the run INVALID', async () => {
    const t = await startRun();
    const k6 = execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' })
      .split('\n')
      .find((l) => l.includes(results) && / run /.test(l) && l.includes('k6'));
    assert.ok(k6, 'k6 runs');
    process.kill(Number(k6.trim().split(/\s+/)[0]), 'SIGKILL');
    assert.equal(await exited(t.p, 60_000), 3, t.p.output());
    const { run } = latest();
    assert.equal(run.verdict, 'invalid');
    assert.match(run.invalid_reasons.join(' '), /k6 was killed \(SIGKILL\)/);
    assert.equal(run.incomplete, true);
    await assertClean(t);
  });

  it('an interrupted run is INVALID, its faults undone, nothing left running', async () => {
    const t = await startRun();
    process.kill(t.p.pid!, 'SIGINT');
    assert.equal(await exited(t.p, 60_000), 3, t.p.output());
    const { run } = latest();
    assert.equal(run.verdict, 'invalid');
    assert.match(run.invalid_reasons.join(' '), /interrupted/);
    assert.match(t.p.output(), /VERDICT: INVALID/);
    await assertClean(t);
  });
});

describe('concurrent runs', () => {
  it('two runs started in the same second get their own folders and both complete', async () => {
    const dir = join(tmp, 'twin');
    const args = [
      'run',
      'smoke',
      '--devices',
      '2',
      '--duration',
      '4s',
      '--wake',
      'off',
      '--results',
      dir,
      '--no-dashboard',
    ];
    const [a, b] = await Promise.all([runCli(args, { timeoutMs: 60_000 }), runCli(args, { timeoutMs: 60_000 })]);
    assert.equal(a.code, 0, a.stdout + a.stderr);
    assert.equal(b.code, 0, b.stdout + b.stderr);
    const runs = readdirSync(dir).filter((f) => f.startsWith('smoke-'));
    assert.equal(runs.length, 2, runs.join());
    for (const r of runs) {
      const run = JSON.parse(readFileSync(join(dir, r, 'run.json'), 'utf8'));
      assert.equal(run.run_id, r);
      assert.ok(existsSync(join(dir, r, 'summary.json')));
    }
  });
});
