// The `wakestorm k8s` bundle against a real Kubernetes API server (test/helpers/kube.ts): the documented `kubectl apply`
// is accepted and stores what was written (nothing pruned by the TestRun CRD's schema), the archive comes back byte for
// byte, and the Jobs the pinned k6-operator makes from the TestRun (built here as its pkg/resources/jobs does) pass the
// server's own validation. Then the operator's initializer command runs on the archive read back from the server, with
// runner-entry.sh as the image's `k6`, and says every runner has its chaos VU.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse } from 'yaml';
import { PINS, requireTools } from '../../scripts/tools.ts';
import { goModule, startKube, type Kube } from '../helpers/kube.ts';
import { ROOT, runCli, waitFor } from '../helpers/proc.ts';

const work = mkdtempSync(join(tmpdir(), 'wakestorm-k8s-api-'));

interface Runner {
  image: string;
  env?: { name: string; value?: string }[];
  resources?: object;
  securityContext?: object;
  containerSecurityContext?: object;
  volumes?: { name: string }[];
  volumeMounts?: { name: string; mountPath: string }[];
}
interface TestRun {
  metadata: { name: string; namespace?: string };
  spec: {
    parallelism: number;
    separate?: boolean;
    script: { configMap: { name: string; file: string } };
    runner: Runner;
    initializer?: Runner;
  };
}

/** k6-operator v0.0.19's segmentation.NewCommandFragments. */
function segmentArgs(index: number, total: number): string[] {
  if (total <= 1) return [];
  const part = (i: number) => (i === 0 ? '0' : i === total ? '1' : `${i}/${total}`);
  const seq = ['0', ...Array.from({ length: total - 1 }, (_, i) => `${i + 1}/${total}`), '1'];
  return [`--execution-segment=${part(index - 1)}:${part(index)}`, `--execution-segment-sequence=${seq.join(',')}`];
}

/** The script volume and its mount (v0.0.19 pkg/types/script.go, a ConfigMap script). */
function scriptVolume(tr: TestRun) {
  return {
    volume: { name: 'k6-test-volume', configMap: { name: tr.spec.script.configMap.name } },
    mount: { name: 'k6-test-volume', mountPath: '/test' },
  };
}

function labels(tr: TestRun, runner: boolean): Record<string, string> {
  return { app: 'k6', k6_cr: tr.metadata.name, ...(runner ? { runner: 'true' } : {}) };
}

/** Runner `index` (1-based) as v0.0.19's jobs.NewRunnerJob builds it from the TestRun. */
function runnerJob(tr: TestRun, index: number): object {
  const name = `${tr.metadata.name}-${index}`;
  const r = tr.spec.runner;
  const script = scriptVolume(tr);
  const command = [
    'k6',
    'run',
    '--quiet',
    ...segmentArgs(index, tr.spec.parallelism),
    `/test/${tr.spec.script.configMap.file}`,
    '--address=0.0.0.0:6565',
    '--paused',
    '--tag',
    `instance_id=${index}`,
    '--tag',
    `job_name=${name}`,
  ];
  const antiAffinity = {
    podAntiAffinity: {
      requiredDuringSchedulingIgnoredDuringExecution: [
        {
          labelSelector: {
            matchExpressions: [
              { key: 'app', operator: 'In', values: ['k6'] },
              { key: 'runner', operator: 'In', values: ['true'] },
            ],
          },
          topologyKey: 'kubernetes.io/hostname',
        },
      ],
    },
  };
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name, labels: labels(tr, true) },
    spec: {
      backoffLimit: 0,
      template: {
        metadata: { labels: labels(tr, true) },
        spec: {
          automountServiceAccountToken: true,
          serviceAccountName: 'default',
          hostname: name,
          restartPolicy: 'Never',
          ...(tr.spec.separate ? { affinity: antiAffinity } : {}),
          securityContext: r.securityContext ?? {},
          containers: [
            {
              image: r.image,
              name: 'k6',
              command,
              env: r.env ?? [],
              resources: r.resources ?? {},
              volumeMounts: [script.mount, ...(r.volumeMounts ?? [])],
              ports: [{ containerPort: 6565 }],
              securityContext: r.containerSecurityContext ?? {},
            },
          ],
          terminationGracePeriodSeconds: 0,
          volumes: [script.volume, ...(r.volumes ?? [])],
        },
      },
    },
  };
}

/** The initializer's shell line (v0.0.19 jobs.NewInitializerJob, no extra arguments). */
function initializerLine(tr: TestRun): string {
  const file = tr.spec.script.configMap.file;
  const archive = `/tmp/${file}.archived.tar`;
  return (
    `mkdir -p $(dirname ${archive}) && k6 archive /test/${file} -O ${archive}  2> /tmp/k6logs && ` +
    `k6 inspect --execution-requirements ${archive} 2> /tmp/k6logs ; ! cat /tmp/k6logs | grep 'level=error'`
  );
}

/** The initializer Job: the runner's pod settings when the TestRun names no initializer. */
function initializerJob(tr: TestRun): object {
  const r = tr.spec.initializer ?? tr.spec.runner;
  const script = scriptVolume(tr);
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name: `${tr.metadata.name}-initializer`, labels: labels(tr, false) },
    spec: {
      backoffLimit: 0,
      template: {
        metadata: { labels: labels(tr, false) },
        spec: {
          automountServiceAccountToken: true,
          serviceAccountName: 'default',
          securityContext: r.securityContext ?? {},
          restartPolicy: 'Never',
          containers: [
            {
              image: r.image,
              name: 'k6',
              command: ['sh', '-c', initializerLine(tr)],
              env: r.env ?? [],
              resources: r.resources ?? {},
              volumeMounts: [script.mount, ...(r.volumeMounts ?? [])],
              ports: [{ containerPort: 6565 }],
              securityContext: r.containerSecurityContext ?? {},
            },
          ],
          volumes: [script.volume, ...(r.volumes ?? [])],
        },
      },
    },
  };
}

async function bundle(name: string, args: string[]): Promise<string> {
  const out = join(work, name);
  const r = await runCli(['k8s', ...args, '--out', out], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  return out;
}

describe('the k8s bundle on a real API server', { timeout: 900_000 }, () => {
  let kube: Kube;
  before(async () => {
    kube = await startKube();
    // The pinned operator's CRD, from its Go module, installed as the operator's own manifests install it.
    const mod = goModule(PINS.k6Operator.module, PINS.k6Operator.version);
    kube.kubectl(['apply', '-f', join(mod.Dir, PINS.k6Operator.crd)]);
    // `kubectl wait` fails outright while the new CRD has no status yet: poll its Established condition.
    const established = () => {
      const crd = JSON.parse(kube.kubectl(['get', 'crd/testruns.k6.io', '-o', 'json'])) as {
        status?: { conditions?: { type: string; status: string }[] };
      };
      return crd.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True') ?? false;
    };
    await waitFor(() => established(), 60_000, 'the TestRun CRD established');
  });
  after(async () => {
    await kube?.stop();
  });

  it('takes flaky-network --parallelism 4 as docs/distributed.md applies it, and every runner gets the timeline', async () => {
    const out = await bundle('flaky', [
      'flaky-network',
      '--parallelism',
      '4',
      '--devices',
      '20000',
      '--duration',
      '10m',
      '--server-url',
      'ws://voice.voice-prod.svc:9000',
    ]);
    const docs = readFileSync(join(ROOT, 'docs', 'distributed.md'), 'utf8');
    const documented = /^kubectl apply --server-side -f k8s\/configmap\.yaml -f k8s\/testrun\.yaml$/m;
    assert.match(docs, documented, 'the documented apply is the one run here');
    kube.kubectl(['create', 'namespace', 'load']);
    const applied = kube.kubectl([
      'apply',
      '-n',
      'load',
      '--server-side',
      '-f',
      join(out, 'configmap.yaml'),
      '-f',
      join(out, 'testrun.yaml'),
    ]);
    assert.match(applied, /testrun\.k6\.io\/wakestorm-flaky-network serverside-applied/);
    // Applied again (a user re-running the command) it is unchanged, not refused.
    kube.kubectl(['apply', '-n', 'load', '--server-side', '-f', join(out, 'configmap.yaml')]);

    // The server keeps every field written: the CRD's structural schema prunes unknown fields silently.
    const written = parse(readFileSync(join(out, 'testrun.yaml'), 'utf8')) as TestRun;
    const stored = JSON.parse(kube.kubectl(['get', '-n', 'load', 'testrun', written.metadata.name, '-o', 'json']));
    assert.deepEqual(stored.spec, written.spec);
    assert.equal(stored.spec.parallelism, 4);

    // The archive comes back from the server byte for byte.
    const b64 = kube.kubectl([
      'get',
      '-n',
      'load',
      'configmap',
      written.spec.script.configMap.name,
      '-o',
      `jsonpath={.binaryData.${written.spec.script.configMap.file.replace('.', '\\.')}}`,
    ]);
    const archive = Buffer.from(b64, 'base64');
    assert.deepEqual(archive, readFileSync(join(out, 'archive.tar')));

    // Every Job the operator makes from this TestRun passes the server's validation (volumes and mounts match, the
    // security context, resources and anti-affinity are well-formed).
    const tr = stored as TestRun;
    for (const job of [initializerJob(tr), ...[1, 2, 3, 4].map((i) => runnerJob(tr, i))]) {
      const r = kube.kubectl(
        ['create', '-n', 'load', '--dry-run=server', '-o', 'name', '-f', '-'],
        JSON.stringify(job),
      );
      assert.match(r, /^job\.batch\//);
    }
    // The check is live: a Job mounting a volume the pod does not have is refused.
    const broken = runnerJob(tr, 1) as { spec: { template: { spec: { volumes: unknown[] } } } };
    broken.spec.template.spec.volumes = broken.spec.template.spec.volumes.slice(0, 1);
    writeFileSync(join(work, 'broken.json'), JSON.stringify(broken));
    const refused = kube.tryKubectl(['create', '-n', 'load', '--dry-run=server', '-f', join(work, 'broken.json')]);
    assert.notEqual(refused.code, 0, refused.out);
    assert.match(refused.out, /volumeMounts\[1\]\.name: Not found: "results"/);

    // The initializer's command on the archive the server gave back, the image's layout (runner-entry.sh as `k6`):
    // a chaos VU in each of the 4 runners, so each runner's Toxiproxy gets the timeline.
    const tools = requireTools();
    const bin = join(work, 'bin');
    mkdirSync(bin);
    writeFileSync(
      join(bin, 'k6'),
      `#!/bin/sh\nWAKESTORM_BIN=${join(work, 'image')} exec sh ${join(ROOT, 'deploy', 'runner-entry.sh')} "$@"\n`,
      { mode: 0o755 },
    );
    const image = join(work, 'image');
    mkdirSync(image);
    symlinkSync(tools.k6, join(image, 'k6'));
    const root = join(work, 'pod');
    mkdirSync(join(root, 'test'), { recursive: true });
    writeFileSync(join(root, 'test', tr.spec.script.configMap.file), archive);
    const line = initializerLine(tr).replace(/\/(test|tmp)\//g, (_, d: string) => `${root}/${d}/`);
    const inspected = execFileSync('sh', ['-c', line], {
      env: { PATH: `${bin}:${process.env.PATH}`, HOME: root },
      encoding: 'utf8',
      timeout: 120_000,
    });
    const req = JSON.parse(inspected) as { scenarios: Record<string, { vus?: number }>; maxVUs?: number };
    assert.equal(req.scenarios.chaos?.vus, 4, 'a chaos VU in each runner');
    assert.ok((req.scenarios.devices?.vus ?? 0) >= 4, JSON.stringify(req.scenarios.devices));
    // The operator's own check on this output (controllers/k6_initialize.go): no more runners than VUs.
    assert.ok((req.maxVUs ?? 0) >= tr.spec.parallelism, `maxVUs ${req.maxVUs}`);
  });

  it('refuses client-side apply of the archive (why the docs say --server-side) and takes kubectl create', () => {
    const out = join(work, 'flaky');
    kube.kubectl(['create', 'namespace', 'client-side']);
    const r = kube.tryKubectl(['apply', '-n', 'client-side', '-f', join(out, 'configmap.yaml')]);
    assert.notEqual(r.code, 0, r.out);
    assert.match(r.out, /metadata\.annotations: Too long: may not be more than 262144 bytes/);
    const c = kube.kubectl(['create', '-n', 'client-side', '-f', join(out, 'configmap.yaml')]);
    assert.match(c, /configmap\/wakestorm-flaky-network-script created/);
  });

  it('takes the token Secret and the results claim variants', async () => {
    kube.kubectl(['create', 'namespace', 'variants']);
    kube.kubectl(['create', 'secret', 'generic', 'voice-token', '-n', 'variants', '--from-literal=token=s3cret-key']);
    const withToken = await bundle('with-token', [
      'smoke',
      '--server-url',
      'ws://voice.variants.svc:9000',
      '--token-secret',
      'voice-token',
    ]);
    const claim = await bundle('with-claim', [
      'smoke',
      '--name',
      'wakestorm-smoke-claim',
      '--server-url',
      'ws://voice.variants.svc:9000',
      '--parallelism',
      '2',
      '--results-claim',
      'shared-results',
      '--storage-class',
      'nfs-client',
    ]);
    kube.kubectl(['apply', '-n', 'variants', '-f', join(claim, 'results-pvc.yaml')]);
    for (const out of [withToken, claim]) {
      kube.kubectl(['apply', '-n', 'variants', '--server-side', '-f', join(out, 'configmap.yaml')]);
      kube.kubectl(['apply', '-n', 'variants', '--server-side', '-f', join(out, 'testrun.yaml')]);
      const written = parse(readFileSync(join(out, 'testrun.yaml'), 'utf8')) as TestRun;
      const stored = JSON.parse(
        kube.kubectl(['get', '-n', 'variants', 'testrun', written.metadata.name, '-o', 'json']),
      ) as TestRun;
      assert.deepEqual(stored.spec, written.spec);
      for (let i = 1; i <= stored.spec.parallelism; i++) {
        const job = JSON.stringify(runnerJob(stored, i));
        assert.match(
          kube.kubectl(['create', '-n', 'variants', '--dry-run=server', '-o', 'name', '-f', '-'], job),
          /^job/,
        );
      }
    }
    const pvc = JSON.parse(kube.kubectl(['get', '-n', 'variants', 'pvc', 'shared-results', '-o', 'json'])) as {
      spec: { accessModes: string[]; storageClassName: string };
    };
    assert.deepEqual([pvc.spec.accessModes, pvc.spec.storageClassName], [['ReadWriteMany'], 'nfs-client']);
    // The token is in the Secret only, never in what wakestorm wrote.
    for (const f of ['testrun.yaml', 'configmap.yaml']) {
      assert.ok(!readFileSync(join(withToken, f)).includes('s3cret-key'), f);
    }
  });
});
