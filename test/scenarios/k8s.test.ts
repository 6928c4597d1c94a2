// `wakestorm k8s` and `wakestorm merge`: the manifests validate against the TestRun CRD of the pinned k6-operator
// release, and the runners they describe, run here as local processes the way the operator runs them (its segment
// flags, --paused, its instance tag, resumed together), merge into one verdict.
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Ajv } from 'ajv';
import { parse } from 'yaml';
import { requireEngine } from '../../scripts/engine.ts';
import { PINS, requireTools } from '../../scripts/tools.ts';
import { startVoiceServer, type VoiceServer } from '../../server/server.ts';
import { goModule } from '../helpers/kube.ts';
import { freePort, ROOT, runCli, waitFor } from '../helpers/proc.ts';

const work = mkdtempSync(join(tmpdir(), 'wakestorm-k8s-'));

const K6_OPERATOR = PINS.k6Operator;

/** The TestRun schema from the pinned k6-operator module (the Go module proxy serves it; `go` fetches it). */
function testRunSchema(): object {
  const dir = goModule(K6_OPERATOR.module, K6_OPERATOR.version).Dir;
  const crd = parse(readFileSync(join(dir, K6_OPERATOR.crd), 'utf8')) as {
    spec: { names: { kind: string }; versions: { name: string; schema: { openAPIV3Schema: object } }[] };
  };
  assert.equal(crd.spec.names.kind, 'TestRun');
  return crd.spec.versions.find((v) => v.name === 'v1alpha1')!.schema.openAPIV3Schema;
}

describe('wakestorm k8s', () => {
  const out = join(work, 'manifests');
  const tl = join(work, 'cut.json');
  writeFileSync(tl, JSON.stringify([{ at: '6s', for: '3s', fault: 'cut' }]));

  it('writes a TestRun that validates against the pinned k6-operator CRD', async () => {
    const r = await runCli(
      [
        'k8s',
        'smoke',
        '--out',
        out,
        '--server-url',
        'ws://voice.default.svc:9000',
        '--parallelism',
        '2',
        '--devices',
        '20',
        '--duration',
        '25s',
        '--timeline',
        tl,
      ],
      { timeoutMs: 60_000 },
    );
    assert.equal(r.code, 0, r.stderr);
    const ajv = new Ajv({ strict: false, validateFormats: false, allErrors: true });
    const validate = ajv.compile(testRunSchema());
    const testRun = parse(readFileSync(join(out, 'testrun.yaml'), 'utf8')) as {
      apiVersion: string;
      kind: string;
      spec: { parallelism: unknown; runner: { env: { name: string; value?: string }[]; image: string } };
    };
    assert.equal(testRun.apiVersion, 'k6.io/v1alpha1');
    assert.equal(testRun.kind, 'TestRun');
    assert.ok(validate(testRun), JSON.stringify(validate.errors));
    // No results claim: each runner keeps its results in its own pod for a while (no RWX storage needed), written as
    // the image's user with the volume made its group's.
    assert.deepEqual(testRun.spec.runner.env, [
      { name: 'WAKESTORM_SERVER', value: 'voice.default.svc:9000' },
      { name: 'WAKESTORM_HOLD_S', value: '900' },
      { name: 'WAKESTORM_K6_GOGC', value: '50' },
    ]);
    const runner = testRun.spec.runner as unknown as {
      securityContext: { fsGroup: number; runAsUser: number };
      volumes: { name: string; emptyDir?: object }[];
    };
    assert.deepEqual([runner.securityContext.fsGroup, runner.securityContext.runAsUser], [12345, 12345]);
    assert.ok(runner.volumes.find((v) => v.name === 'results')?.emptyDir, JSON.stringify(runner.volumes));
    assert.ok(!existsSync(join(out, 'results-pvc.yaml')), 'no ReadWriteMany claim unless asked for');
    // The validator is live: a manifest the operator would refuse fails it.
    assert.equal(validate({ ...testRun, spec: { ...testRun.spec, parallelism: 'two' } }), false);
    assert.equal(validate({ ...testRun, spec: { ...testRun.spec, script: {}, parallelism: undefined } }), false);
    // The ConfigMap carries the k6 archive whole, and it is the scenario with the run's variables.
    const cm = parse(readFileSync(join(out, 'configmap.yaml'), 'utf8')) as { binaryData: Record<string, string> };
    const tar = Buffer.from(cm.binaryData['archive.tar']!, 'base64');
    assert.deepEqual(tar, readFileSync(join(out, 'archive.tar')));
    const inspected = JSON.parse(
      execFileSync(requireTools().k6, ['inspect', join(out, 'archive.tar')], { encoding: 'utf8' }),
    ) as { scenarios: Record<string, { vus?: number }> };
    assert.equal(inspected.scenarios.chaos?.vus, 2, 'one chaos VU per runner');
    // The scenario's own timeline (no --timeline) reaches every runner too; a claim with its storage class on request.
    const own = join(work, 'own-timeline');
    const f = await runCli(
      ['k8s', 'flaky-network', '--out', own, '--server-url', 'ws://v:9', '--parallelism', '4'].concat([
        '--results-claim',
        'shared',
        '--storage-class',
        'nfs-client',
      ]),
      { timeoutMs: 60_000 },
    );
    assert.equal(f.code, 0, f.stderr);
    const ownRun = JSON.parse(
      execFileSync(requireTools().k6, ['inspect', join(own, 'archive.tar')], { encoding: 'utf8' }),
    ) as { scenarios: Record<string, { vus?: number }> };
    assert.equal(ownRun.scenarios.chaos?.vus, 4, "flaky-network's own timeline: a chaos VU in each of 4 runners");
    // Its own fleet (no --devices) is laid out for 4 runners too: a device VU in each (it was 3 VUs, one runner idle).
    assert.ok((ownRun.scenarios.devices?.vus ?? 0) >= 4, JSON.stringify(ownRun.scenarios.devices));
    const pvc = parse(readFileSync(join(own, 'results-pvc.yaml'), 'utf8')) as {
      spec: { storageClassName: string; accessModes: string[] };
    };
    assert.deepEqual([pvc.spec.storageClassName, pvc.spec.accessModes], ['nfs-client', ['ReadWriteMany']]);
    const ownTestRun = parse(readFileSync(join(own, 'testrun.yaml'), 'utf8')) as { spec: { runner: object } };
    assert.ok(validate(ownTestRun), JSON.stringify(validate.errors));
    assert.ok(!JSON.stringify(ownTestRun).includes('WAKESTORM_HOLD_S'), 'with a shared claim, no hold');
    // The documented apply is server-side: the ConfigMap (the archive in base64) is past client-side apply's 256 KiB
    // annotation, within the 1 MiB object limit.
    const cmBytes = readFileSync(join(own, 'configmap.yaml')).length;
    assert.ok(cmBytes < 1024 * 1024, `configmap.yaml ${cmBytes} bytes`);
    assert.match(
      readFileSync(join(ROOT, 'docs', 'distributed.md'), 'utf8'),
      /kubectl apply --server-side -f k8s\/configmap\.yaml/,
    );
    // A token comes from the named Secret, as a file: never in the manifests.
    const withToken = join(work, 'with-token');
    const t = await runCli([
      'k8s',
      'smoke',
      '--out',
      withToken,
      '--server-url',
      'ws://v:9',
      '--token-secret',
      'voice-token',
    ]);
    assert.equal(t.code, 0, t.stderr);
    const tr = parse(readFileSync(join(withToken, 'testrun.yaml'), 'utf8')) as object;
    assert.ok(validate(tr), JSON.stringify(validate.errors));
    assert.match(JSON.stringify(tr), /"secretName":"voice-token"/);
  });

  it('refuses in one line what a cluster run cannot do', async () => {
    for (const [args, why] of [
      [['--server-url', 'http://x:1'], /must be ws:\/\//],
      [['--server-url', 'ws://x:1', '--timeline', 'server-restart', '--duration', '2m'], /control API/],
      [['--server-url', 'ws://x:1', '--parallelism', '0'], /--parallelism/],
      [['--server-url', 'ws://x:1', '--parallelism', '8', '--devices', '4'], /--parallelism 8 needs a device in each/],
      [
        ['--server-url', 'ws://x:1', '--parallelism', '3', '--devices', '5', '--devices-per-vu', '3'],
        /--devices-per-vu 3 makes 2 VUs, and --parallelism 3 needs one in each: give at most 1/,
      ],
    ] as const) {
      const r = await runCli(['k8s', 'smoke', '--out', join(work, 'refused'), ...args]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr.trim(), why);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
  });

  describe('its runners, run here as the operator runs them', () => {
    let server: VoiceServer;
    const kids: ChildProcess[] = [];
    before(async () => {
      server = await startVoiceServer({ port: await freePort(), host: '127.0.0.1' });
    });
    after(async () => {
      // Each runner is a process group (sh, its Toxiproxy, engine and k6): nothing outlives the test.
      for (const k of kids) if (k.exitCode === null) process.kill(-k.pid!, 'SIGKILL');
      await server.close();
    });

    it('two segments with their own Toxiproxy and engine merge into one PASS', async () => {
      // The image's layout: the real k6, Toxiproxy and the engine in one folder; runner-entry.sh as `k6`.
      const tools = requireTools();
      const bin = join(work, 'bin');
      mkdirSync(bin);
      symlinkSync(tools.k6, join(bin, 'k6'));
      symlinkSync(tools.toxiproxyServer, join(bin, 'toxiproxy-server'));
      symlinkSync(tools.toxiproxyCli, join(bin, 'toxiproxy-cli'));
      symlinkSync(requireEngine(), join(bin, 'wakestorm-engine'));
      const results = join(work, 'results');
      const apis: string[] = [];
      const ends: Promise<number | null>[] = [];
      for (const index of [1, 2]) {
        const api = await freePort();
        apis.push(`http://127.0.0.1:${api}`);
        // NewRunnerJob's command for runner `index` of 2 (k6-operator pkg/resources/jobs/runner.go).
        const args = [
          'run',
          '--quiet',
          `--execution-segment=${index === 1 ? '0:1/2' : '1/2:1'}`,
          '--execution-segment-sequence=0,1/2,1',
          join(out, 'archive.tar'),
          `--address=127.0.0.1:${api}`,
          '--paused',
          '--tag',
          `instance_id=${index}`,
          '--tag',
          `job_name=wakestorm-smoke-${index}`,
        ];
        const kid = spawn('sh', [join(ROOT, 'deploy', 'runner-entry.sh'), ...args], {
          env: {
            ...process.env,
            WAKESTORM_BIN: bin,
            WAKESTORM_RESULTS: results,
            WAKESTORM_SERVER: `127.0.0.1:${server.port}`,
            WAKESTORM_TOXIPROXY_PORT: String(await freePort()),
            WAKESTORM_PROXY_PORT: String(await freePort()),
            WAKESTORM_ENGINE_PORT: String(await freePort()),
            // The pod's wait for `kubectl cp` after k6 ends (runner 2 only, kept short here).
            WAKESTORM_HOLD_S: index === 2 ? '2' : '0',
            WAKESTORM_K6_GOGC: '50',
          },
          stdio: ['ignore', 'ignore', 'pipe'],
          detached: true,
        });
        let err = '';
        kid.stderr!.on('data', (d) => (err += d));
        kids.push(kid);
        ends.push(
          new Promise((res) =>
            kid.on('close', (code) => {
              if (code !== 0) console.error(`runner ${index}: ${err.slice(-2000)}`);
              if (index === 2) assert.match(err, /results in .*instance-2; copy them out within 2 s/);
              res(code);
            }),
          ),
        );
      }
      // The starter: once every runner's API answers, resume them all (k6-operator curl_start.go).
      const paused = async (api: string) => {
        try {
          const s = (await (await fetch(`${api}/v1/status`)).json()) as { data: { attributes: { status: number } } };
          return s.data.attributes.status === 4;
        } catch {
          return false;
        }
      };
      await waitFor(async () => (await Promise.all(apis.map(paused))).every(Boolean), 60_000, 'both runners paused');
      // The TestRun's WAKESTORM_K6_GOGC reaches k6 as GOGC, and only k6 (the engine keeps its own, main.go).
      for (const kid of kids) {
        const gogc = (name: string) => {
          const pid = execFileSync('pgrep', ['-P', String(kid.pid), '-x', name], { encoding: 'utf8' }).trim();
          return readFileSync(`/proc/${pid}/environ`, 'utf8')
            .split('\0')
            .find((e) => e.startsWith('GOGC='));
        };
        assert.equal(gogc('k6'), 'GOGC=50');
        assert.equal(gogc('wakestorm-engin'), undefined);
      }
      const body = JSON.stringify({ data: { type: 'status', id: 'default', attributes: { paused: false } } });
      for (const api of apis) assert.ok((await fetch(`${api}/v1/status`, { method: 'PATCH', body })).ok);
      const codes = await Promise.all(ends);
      assert.deepEqual(codes, [0, 0]);
      // Each runner's k6.log says which faults it applied: a copy where runner 2's chaos VU applied none is INVALID.
      const noChaos = join(work, 'results-no-chaos');
      cpSync(results, noChaos, { recursive: true });
      const log2 = join(noChaos, 'instance-2', 'k6.log');
      assert.match(readFileSync(log2, 'utf8'), /CHAOS_EVENT/);
      writeFileSync(
        log2,
        readFileSync(log2, 'utf8')
          .split('\n')
          .filter((l) => !l.includes('CHAOS_EVENT'))
          .join('\n'),
      );
      const bad = await runCli(['merge', noChaos], { timeoutMs: 60_000 });
      assert.equal(bad.code, 3, bad.stdout + bad.stderr);
      assert.match(bad.stdout, /instance-2: 2 of 2 planned fault onsets and ends were never applied/);
      const m = await runCli(['merge', results], { timeoutMs: 60_000 });
      assert.equal(m.code, 0, m.stdout + m.stderr);
      assert.match(m.stdout, /merged 2 instance\(s\)/);
      assert.match(m.stdout, /VERDICT: PASS/);
      const summary = JSON.parse(readFileSync(join(results, 'summary.json'), 'utf8')) as {
        metrics: Record<string, { values: Record<string, number> }>;
      };
      assert.equal(summary.metrics.devices_started!.values.count, 20);
      // Each runner cut its own devices through its own Toxiproxy, within its own fault window.
      assert.equal(summary.metrics.connection_drops!.values.count, 20);
      assert.equal(summary.metrics.unplanned_drops!.values.count, 0);
      assert.match(readFileSync(join(results, 'junit.xml'), 'utf8'), /failures="0" errors="0"/);
      const events = JSON.parse(readFileSync(join(results, 'events.json'), 'utf8')) as { applied: unknown[] };
      assert.equal(events.applied.length, 4, 'both runners applied the onset and the end');
      const run = JSON.parse(readFileSync(join(results, 'run.json'), 'utf8')) as { verdict: string };
      assert.equal(run.verdict, 'pass');
    });
  });
});
