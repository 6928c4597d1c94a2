// `wakestorm k8s`: the same run for the k6-operator (docs/distributed.md). A k6 archive of the scenario with the
// run's variables (k6 bundles every file the scenario imports or opens) in a ConfigMap, a TestRun whose runners are
// the image deploy/Dockerfile builds (k6, with its own Toxiproxy and device engine beside it: deploy/runner-entry.sh),
// a claim for the runners' results, and the image's build line with the pinned versions. Nothing is applied here.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stringify } from 'yaml';
import { k6VarArgs, type K6Vars } from '../core/run-contract.ts';
import { k6GcEnv } from './k6.ts';
import { inspectForSegments, planRun, ROOT, RunError, type RunOptions } from './run.ts';
import { k6Env, PINS, requireTools } from './tools.ts';

/**
 * What one runner pod costs per device, from BENCHMARKS.md's `engine` row at 10,000 talking devices on this box:
 * k6 + engine 374.7 MiB and 48.7% of a core, Toxiproxy 669.7 MiB and 49.5%: ~107 KiB and ~0.1 millicore per device.
 */
const RUNNER_COST = { kibPerDevice: 107, millicoresPerDevice: 0.1, baseMiB: 256, baseMillicores: 250 } as const;

/** A ConfigMap holds at most 1 MiB (etcd's object limit); the archive goes in base64 (4/3) with room for the rest. */
const CONFIGMAP_MAX_ARCHIVE = 700 * 1024;

export interface K8sOptions extends Pick<
  RunOptions,
  'scenario' | 'devices' | 'devicesPerVu' | 'duration' | 'profile' | 'timeline' | 'wake' | 'dialect' | 'seed'
> {
  backoff?: string;
  slo?: string[];
  parallelism: number;
  /** The server under test as the runners reach it: ws://host:port. */
  serverUrl: string;
  out: string;
  image?: string;
  name?: string;
  /** A Secret whose `token` key is the devices' bearer token (mounted as a file; never in the manifest). */
  tokenSecret?: string;
  /**
   * A ReadWriteMany claim the runners write their results into (written as results-pvc.yaml). None: each runner
   * writes into a volume of its own (emptyDir) and keeps its pod up for RESULTS_HOLD_S after k6 ends, for `kubectl
   * cp` (docs/distributed.md): no RWX storage class is needed.
   */
  resultsClaim?: string;
  /** A storage class for the results claim (what the cluster offers with ReadWriteMany). */
  storageClass?: string;
}

/** How long a runner with no results claim keeps its pod up after k6 ends, for its results to be copied out. */
const RESULTS_HOLD_S = 900;
/** The runner image's user (deploy/Dockerfile): the results volume is made writable for its group. */
const RUNNER_UID = 12345;

/** A DNS-1123 name from the scenario's (TestRun and ConfigMap names). */
function k8sName(s: string): string {
  return (
    s
      .toLowerCase()
      .replace(/[^a-z0-9-]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 50) || 'wakestorm'
  );
}

/** host:port of a ws:// URL (Toxiproxy in each runner forwards TCP to it). */
function upstream(serverUrl: string): string {
  let u: URL;
  try {
    u = new URL(serverUrl);
  } catch {
    throw new RunError(`--server-url must be a URL like ws://voice.default.svc:9000, got '${serverUrl}'`);
  }
  if (u.protocol !== 'ws:')
    throw new RunError(
      `--server-url must be ws:// (each runner's Toxiproxy forwards TCP; give the server's plain port), got '${serverUrl}'`,
    );
  if (u.pathname !== '/' || u.search)
    throw new RunError(`--server-url is a base (ws://host:port), without a path: the dialect adds it`);
  return `${u.hostname.replace(/^\[|\]$/g, '')}:${u.port || '80'}`;
}

export interface K8sFiles {
  dir: string;
  files: string[];
  name: string;
  archiveBytes: number;
}

/** Writes the manifests into `out`; every flag is checked first, and nothing is written on a refusal. */
export function writeK8s(o: K8sOptions): K8sFiles {
  if (!Number.isInteger(o.parallelism) || o.parallelism < 1 || o.parallelism > 1000)
    throw new RunError(`--parallelism must be an integer from 1 to 1000, got '${o.parallelism}'`);
  const hostPort = upstream(o.serverUrl);
  const plan = planRun({ ...o, slo: o.slo });
  if (plan.controlFault)
    throw new RunError(
      `--timeline: '${plan.controlFault}' needs the stack's control API (it restarts the reference server); in Kubernetes, restart your server's pods yourself and keep the network faults in the timeline`,
    );
  const vars: K6Vars = { ...plan.vars };
  // Every runner gets VUs of its own (k6 splits by VU), and its own chaos VU for its own Toxiproxy.
  const devices =
    inspectForSegments(plan.script, vars, o.parallelism, true, `--parallelism ${o.parallelism}`).devices ?? 0;
  // A chaos VU in every runner's segment, each for its own Toxiproxy: always, so the scenario's own timeline (no
  // --timeline given) reaches every runner too. A scenario with no timeline has no chaos scenario to size.
  vars.CHAOS_VUS = String(o.parallelism);
  const name = k8sName(o.name ?? `wakestorm-${plan.script.split('/').pop()!.replace(/\.ts$/, '')}`);
  const dir = resolve(o.out);
  if (existsSync(dir) && !statSync(dir).isDirectory()) throw new RunError(`--out ${o.out} is a file, not a folder`);
  mkdirSync(dir, { recursive: true });
  const archive = join(dir, 'archive.tar');
  // k6 bundles the scenario with everything it imports and opens (core/, dialects, audio, profile and timeline files).
  try {
    execFileSync(requireTools().k6, ['archive', ...k6VarArgs(vars), '-O', archive, plan.script], {
      cwd: ROOT,
      env: k6Env(),
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 60_000,
    });
  } catch (e) {
    const err = String((e as { stderr?: Buffer }).stderr ?? (e as Error).message).trim();
    throw new RunError(`k6 archive failed: ${err.split('\n').pop()}`);
  }
  const tar = readFileSync(archive);
  if (tar.length > CONFIGMAP_MAX_ARCHIVE)
    throw new RunError(
      `the scenario's k6 archive is ${Math.round(tar.length / 1024)} KiB, over the ${CONFIGMAP_MAX_ARCHIVE / 1024} KiB a ConfigMap can carry: give the runners the archive on a volume (script.volumeClaim) instead`,
    );
  const perRunner = Math.ceil(devices / o.parallelism);
  const configMap = {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: `${name}-script`, labels: { 'app.kubernetes.io/part-of': 'wakestorm' } },
    binaryData: { 'archive.tar': tar.toString('base64') },
  };
  const claim = o.resultsClaim;
  const volumes: object[] = [
    claim ? { name: 'results', persistentVolumeClaim: { claimName: claim } } : { name: 'results', emptyDir: {} },
  ];
  const mounts: object[] = [{ name: 'results', mountPath: '/results' }];
  if (o.tokenSecret) {
    volumes.push({ name: 'token', secret: { secretName: o.tokenSecret, items: [{ key: 'token', path: 'token' }] } });
    mounts.push({ name: 'token', mountPath: '/var/run/wakestorm', readOnly: true });
  }
  const memMiB = Math.ceil(RUNNER_COST.baseMiB + (perRunner * RUNNER_COST.kibPerDevice) / 1024);
  const cpuM = Math.ceil(RUNNER_COST.baseMillicores + perRunner * RUNNER_COST.millicoresPerDevice);
  const testRun = {
    apiVersion: 'k6.io/v1alpha1',
    kind: 'TestRun',
    metadata: { name, labels: { 'app.kubernetes.io/part-of': 'wakestorm' } },
    spec: {
      parallelism: o.parallelism,
      script: { configMap: { name: `${name}-script`, file: 'archive.tar' } },
      // One runner per node: each holds its devices' sockets, its Toxiproxy doubles them.
      separate: true,
      runner: {
        image: o.image ?? `wakestorm-runner:k6-${PINS.k6.candidates[0].version}`,
        // The token's file is read by k6 when each runner starts (runner-entry.sh passes it on), not when archived.
        env: [
          { name: 'WAKESTORM_SERVER', value: hostPort },
          ...(o.tokenSecret ? [{ name: 'WAKESTORM_TOKEN_FILE', value: '/var/run/wakestorm/token' }] : []),
          ...(claim ? [] : [{ name: 'WAKESTORM_HOLD_S', value: String(RESULTS_HOLD_S) }]),
          // k6's collector as a local run sets it beside the device engine (k6.ts k6GcEnv); runner-entry.sh gives it to
          // k6 alone (GOGC in the pod's environment would reach the engine and Toxiproxy too).
          ...Object.entries(k6GcEnv('native')).map(([k, value]) => ({ name: `WAKESTORM_K6_${k}`, value })),
        ],
        // The image runs as its own user; the results volume is made its group's, so mkdir there works.
        securityContext: { runAsUser: RUNNER_UID, runAsGroup: RUNNER_UID, fsGroup: RUNNER_UID, runAsNonRoot: true },
        resources: {
          requests: { cpu: `${cpuM}m`, memory: `${memMiB}Mi` },
          limits: { memory: `${memMiB * 2}Mi` },
        },
        volumes,
        volumeMounts: mounts,
      },
    },
  };
  const pvc = claim && {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: { name: claim, labels: { 'app.kubernetes.io/part-of': 'wakestorm' } },
    spec: {
      accessModes: ['ReadWriteMany'],
      ...(o.storageClass ? { storageClassName: o.storageClass } : {}),
      resources: { requests: { storage: '5Gi' } },
    },
  };
  const k6v = PINS.k6.candidates[0];
  const build = [
    '#!/bin/sh',
    '# Builds the runner image from the repository root with the versions wakestorm pins (scripts/tools.ts).',
    'set -eu',
    `docker build -f deploy/Dockerfile --build-arg K6_MODULE=${k6v.module} --build-arg K6_VERSION=${k6v.version} \\`,
    `  --build-arg TOXIPROXY_MODULE=${PINS.toxiproxy.module} --build-arg TOXIPROXY_VERSION=${PINS.toxiproxy.version} \\`,
    `  -t "\${1:-${testRun.spec.runner.image}}" .`,
    '',
  ].join('\n');
  const files: Record<string, string> = {
    'configmap.yaml': stringify(configMap, { lineWidth: 0 }),
    'testrun.yaml': stringify(testRun),
    ...(pvc ? { 'results-pvc.yaml': stringify(pvc) } : {}),
    'build-image.sh': build,
  };
  for (const [f, text] of Object.entries(files))
    writeFileSync(join(dir, f), text, { mode: f.endsWith('.sh') ? 0o755 : 0o644 });
  return { dir, files: ['archive.tar', ...Object.keys(files)], name, archiveBytes: tar.length };
}
