// The chaos gate at fleet scale and against servers that do not recover: a server that stays down after a cut FAILs on
// recovery, naming the fault; a firmware whose own backoff misses a target under a fault is a finding, and the healthy
// server PASSes; 1,000 devices of a path-identified user dialect keep k6's tags bounded. Real k6, Toxiproxy and
// servers; minutes, so outside `npm test` (`npm run test:scenarios`, called by .ci/run).
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { PROFILES } from '../../core/profiles.ts';
import { startAcmeServer } from '../helpers/acme-server.ts';
import { startBuggyServer, type Bug } from '../helpers/buggy-server.ts';
import { ROOT, runCli } from '../helpers/proc.ts';

const tmp = mkdtempSync(join(tmpdir(), 'wakestorm-chaos-gate-'));
const results = join(tmp, 'results');
mkdirSync(results, { recursive: true });
const file = (name: string, body: unknown) => {
  const p = join(tmp, name);
  writeFileSync(p, typeof body === 'string' ? body : JSON.stringify(body));
  return p;
};

interface Run {
  code: number | null;
  out: string;
  run: {
    verdict: string;
    verdict_line: string;
    findings?: string[];
    slo_results: { name: string; status: string; why: string; culprits: string[] }[];
  };
}

let n = 0;
async function gate(bugs: Bug[], args: string[], downAfterLossMs?: number): Promise<Run> {
  const server = await startBuggyServer({
    bugs,
    downAfterLossMs,
    upstream: { sttMs: 50, llmMs: 50, keepaliveMs: 2000 },
  });
  const root = join(results, `g${++n}`);
  try {
    const r = await runCli(['run', ...args, '--server-url', server.url, '--results', root, '--no-dashboard'], {
      timeoutMs: 150_000,
    });
    return {
      code: r.code,
      out: r.stdout + r.stderr,
      run: JSON.parse(readFileSync(join(root, readlinkSync(join(root, 'latest')), 'run.json'), 'utf8')),
    };
  } finally {
    await server.close();
  }
}

const slo = (r: Run, name: string) => r.run.slo_results.find((x) => x.name === name)!;

describe('the chaos gate: recovery and firmware findings', () => {
  const cut8 = file('cut8.json', [{ at: '8s', for: '2s', fault: 'cut' }]);
  /** recommended with a fixed 12 s reconnect backoff: under a cut its own choice misses the 10 s reconnect target. */
  const fixed12 = file('fixed-12s.json', {
    ...PROFILES.recommended,
    name: 'fixed-12s',
    reconnect: { policy: 'fixed', base_ms: 12_000, cap_ms: 12_000, max_attempts: 0, on: 'abnormal' },
  });
  const o: { noRecovery?: Run; firmware?: Run } = {};
  before(async () => {
    [o.noRecovery, o.firmware] = await Promise.all([
      // A 2 s cut at 8 s; the server then refuses everyone for a minute: it has not recovered when the run ends.
      gate(
        ['no-recovery'],
        [
          'smoke',
          '--devices',
          '12',
          '--duration',
          '45s',
          '--wake',
          'poisson:8s',
          '--profile',
          'recommended',
          '--timeline',
          cut8,
        ],
        60_000,
      ),
      gate(
        [],
        [
          'smoke',
          '--devices',
          '12',
          '--duration',
          '35s',
          '--wake',
          'poisson:8s',
          '--profile',
          `recommended:1,${fixed12}:1`,
          '--timeline',
          cut8,
        ],
      ),
    ]);
  });

  it('fails a server that does not come back after a cut on recovery_max, naming the fault and the profile', () => {
    const r = o.noRecovery!;
    assert.equal(r.code, 99, r.out.slice(-1500));
    assert.equal(slo(r, 'recovery_max').status, 'fail', r.run.verdict_line);
    assert.match(
      [slo(r, 'recovery_max').why, ...slo(r, 'recovery_max').culprits].join('; '),
      /fault 1:cut \d+\.\d s.*profile recommended/,
    );
  });

  it("passes the healthy server when only a firmware's own backoff misses a target under a fault: a finding naming it", () => {
    const r = o.firmware!;
    assert.equal(r.code, 0, r.out.slice(-1500));
    assert.match(
      (r.run.findings ?? []).join(' | '),
      /under faults, fixed-12s reconnects in p\(95\) 1\d\.\d s, over reconnect_p95's 10 s: it waits 12 s before it reconnects/,
    );
    assert.ok(!(r.run.findings ?? []).some((f) => /recommended/.test(f)), 'recommended came back in time');
    assert.equal(slo(r, 'recovery_max').status, 'pass');
    assert.match(r.run.verdict_line, /1 firmware finding/);
  });
});

describe("the README's user dialect at fleet scale", () => {
  it('keeps k6 tags bounded for a path-identified dialect: 1,000 devices, one socket name per target and path', async () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const file = join(results, 'acme-1000.json');
    writeFileSync(file, /<!-- readme-dialect:[^>]*-->\s*```json\n([\s\S]*?)```/.exec(readme)![1]!);
    const key = join(results, 'acme-key-1000.txt');
    writeFileSync(key, 'acme-key-1234\n', { mode: 0o600 });
    const out = join(results, 'acme-1000-samples.json');
    const acme = await startAcmeServer({ apiKey: 'acme-key-1234', thinkMs: 80 });
    try {
      // k6's own socket tags are what could grow here: the devices run in k6 (the engine's sockets are not k6's).
      const args = [
        'run',
        'smoke',
        '--engine',
        'k6',
        '--server-url',
        acme.url,
        '--dialect',
        file,
        '--token-file',
        key,
        '--devices',
        '1000',
        '--devices-per-vu',
        '250',
      ];
      const r = await runCli(
        [...args, '--duration', '12s', '--wake', 'off', '--out', `json=${out}`, '--results', results, '--no-dashboard'],
        { timeoutMs: 150_000 },
      );
      assert.ok(r.code === 0, r.stdout + r.stderr);
      // Every distinct value of every tag k6 wrote, across every sample: none may grow with the fleet.
      const values = new Map<string, Set<string>>();
      for (const line of readFileSync(out, 'utf8').split('\n')) {
        if (!line.startsWith('{"metric"') || !line.includes('"type":"Point"')) continue;
        const sample = JSON.parse(line) as { metric: string; data: { tags?: Record<string, string> } };
        // The socket's tags (k6's ws_* samples); setup's one /health request has its own name.
        const tags = sample.data.tags ?? {};
        for (const [k, v] of Object.entries(tags)) {
          if (k !== 'name' || sample.metric.startsWith('ws_'))
            (values.get(k) ?? values.set(k, new Set()).get(k)!).add(v);
        }
      }
      for (const [k, set] of values)
        assert.ok(set.size <= 30, `tag ${k} has ${set.size} values: ${[...set].slice(0, 5).join(', ')}`);
      const names = [...(values.get('name') ?? [])];
      assert.equal(names.length, 1, names.join(', '));
      assert.match(names[0]!, /\/acme\/\{device_id\}$/);
    } finally {
      await acme.close();
    }
  });
});
