// TLS end to end through the faults (issue 37): a wss:// server with a private CA (test/helpers/tls-front.ts: the real
// openssl, a TLS terminator in front of the reference server) runs flaky-network through Toxiproxy with --ca and gets
// the verdict the same server gives in plain ws. The devices verify the server by its own name (localhost), not the
// proxy's 127.0.0.1. Without --ca the run stops before any load, naming the refused certificate; --insecure-tls is
// an opt-in the results say; the k6 device, which cannot name the server behind the proxy, is refused in one line.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makePki, startTlsFront, type Pki, type TlsFront } from '../helpers/tls-front.ts';
import { CLI, freePort, ROOT, runCli, waitFor } from '../helpers/proc.ts';

const tmp = mkdtempSync(join(tmpdir(), 'wakestorm-tls-'));
let pki: Pki;
let front: TlsFront;
let server: ChildProcess;
let plainPort: number;

interface RunJson {
  verdict: string;
  slo_results: { name: string; status: string }[];
  parameters: Record<string, unknown>;
}

async function chaosRun(name: string, url: string, extra: string[]): Promise<{ code: number | null; run: RunJson }> {
  const results = join(tmp, name);
  const r = await runCli(
    [
      'run',
      'flaky-network',
      '--server-url',
      url,
      '--devices',
      '40',
      '--results',
      results,
      '--no-dashboard',
      '--quiet',
    ].concat(extra),
    { timeoutMs: 240_000 },
  );
  const run = JSON.parse(readFileSync(join(results, readlinkSync(join(results, 'latest')), 'run.json'), 'utf8'));
  return { code: r.code, run };
}

describe('a wss:// server through Toxiproxy', { timeout: 600_000 }, () => {
  before(async () => {
    pki = makePki();
    plainPort = await freePort();
    server = spawn(process.execPath, [CLI, 'server', '--host', '127.0.0.1', '--port', String(plainPort)], {
      cwd: ROOT,
      stdio: 'ignore',
    });
    await waitFor(
      () =>
        fetch(`http://127.0.0.1:${plainPort}/health`).then(
          (r) => r.ok,
          () => false,
        ),
      15_000,
      'the reference server',
    );
    front = await startTlsFront(pki, plainPort);
  });
  after(async () => {
    await front?.close();
    server?.kill('SIGTERM');
  });

  it('flaky-network with --ca gives the verdict of the same server in plain ws', async () => {
    const tls = await chaosRun('tls', `wss://localhost:${front.port}`, ['--ca', pki.caPath]);
    const plain = await chaosRun('plain', `ws://127.0.0.1:${plainPort}`, []);
    assert.equal(tls.code, 0, JSON.stringify(tls.run.slo_results));
    assert.equal(tls.run.parameters.tls_verification, `CA ${pki.caPath}`);
    assert.equal(tls.run.verdict, plain.run.verdict);
    const statuses = (r: RunJson) => Object.fromEntries(r.slo_results.map((s) => [s.name, s.status]));
    assert.deepEqual(statuses(tls.run), statuses(plain.run));
    // Devices connected, sessions completed: the run measured the server, through TLS.
    const met = statuses(tls.run);
    assert.equal(met.connect_success, 'pass');
    assert.equal(met.response_p95, 'pass');
  });

  it('without --ca, stops before any load naming the refused certificate', async () => {
    const r = await runCli(['run', 'smoke', '--server-url', `wss://localhost:${front.port}`, '--results', tmp]);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.match(r.stderr, /TLS certificate was not accepted \(\w+\): pass --ca FILE/);
  });

  it('the k6 device behind Toxiproxy is refused in one line; --ca that is no PEM too', async () => {
    const k6 = await runCli(
      ['run', 'smoke', '--server-url', `wss://localhost:${front.port}`, '--ca', pki.caPath, '--engine', 'k6'],
      { timeoutMs: 60_000 },
    );
    assert.equal(k6.code, 2, k6.stdout + k6.stderr);
    assert.match(k6.stderr, /--engine k6 cannot verify wss:\/\/localhost:\d+ through Toxiproxy/);
    const notPem = await runCli(['run', 'smoke', '--server-url', `wss://localhost:${front.port}`, '--ca', CLI]);
    assert.equal(notPem.code, 2);
    assert.match(notPem.stderr, /--ca .* holds no PEM certificate/);
  });
});
