// A real Kubernetes API server on loopback, for checking what `wakestorm k8s` writes as a cluster would: etcd
// (Debian's etcd-server) and kube-apiserver and kubectl built once from the pinned Kubernetes release's Go modules
// into wakestorm's cache. No scheduler, no kubelet: objects are stored and validated, nothing runs.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cacheDir, goBuild, PINS, which } from '../../scripts/tools.ts';
import { freePort } from './proc.ts';

const K8S = PINS.kubernetes;

/** A module of the Go module proxy, downloaded (once, into Go's module cache): its folder and its go.mod. */
export function goModule(module: string, version: string): { Dir: string; GoMod: string } {
  return JSON.parse(
    execFileSync('go', ['mod', 'download', '-json', `${module}@${version}`], {
      cwd: tmpdir(),
      env: { ...process.env, GOFLAGS: '-mod=mod', GO111MODULE: 'on' },
      encoding: 'utf8',
      timeout: 300_000,
    }),
  ) as { Dir: string; GoMod: string };
}

function binDir(): string {
  return join(cacheDir(), `kubernetes-${K8S.version}`);
}

/**
 * kube-apiserver and kubectl of the pinned release, built on first use (about 4 minutes from a cold module cache).
 * k8s.io/kubernetes replaces its staging modules with folders of its own tree; the build pins each to the release's
 * published v0.x instead, read from the release's own go.mod.
 */
export async function requireKubeBinaries(): Promise<{ apiserver: string; kubectl: string }> {
  const dir = binDir();
  const bins = { apiserver: join(dir, 'kube-apiserver'), kubectl: join(dir, 'kubectl') };
  if (existsSync(bins.apiserver) && existsSync(bins.kubectl)) return bins;
  const info = goModule(K8S.module, K8S.version);
  const replace = [...readFileSync(info.GoMod, 'utf8').matchAll(/^\s*(k8s\.io\/[\w.-]+) => \.\/staging\//gm)].map(
    (m) => `${m[1]} => ${m[1]} ${K8S.staging}`,
  );
  if (replace.length < 10) throw new Error(`${K8S.module}@${K8S.version}: its go.mod names no staging modules`);
  await goBuild(
    K8S.module,
    K8S.version,
    [
      { pkg: `${K8S.module}/cmd/kube-apiserver`, out: bins.apiserver },
      { pkg: `${K8S.module}/cmd/kubectl`, out: bins.kubectl },
    ],
    '-s -w',
    () => {},
    replace,
  );
  return bins;
}

export interface Kube {
  /** kubectl against this API server, as the admin; throws with its stderr when it exits non-zero. */
  kubectl(args: string[], input?: string): string;
  /** kubectl's exit code and output, for commands expected to be refused. */
  tryKubectl(args: string[]): { code: number; out: string };
  stop(): Promise<void>;
}

function stopGroup(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const signal = (s: NodeJS.Signals) => {
      try {
        process.kill(-p.pid!, s);
      } catch {
        // the group is gone already
      }
    };
    const kill = setTimeout(() => signal('SIGKILL'), 5_000);
    p.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    signal('SIGTERM');
  });
}

/** etcd and kube-apiserver on ports picked here, ready to answer (`/readyz`); `stop()` ends both. */
export async function startKube(): Promise<Kube> {
  const etcd = which('etcd');
  if (!etcd) throw new Error('no etcd on PATH: apt-get install etcd-server (.ci/run does)');
  const bins = await requireKubeBinaries();
  const work = mkdtempSync(join(tmpdir(), 'wakestorm-kube-'));
  const [client, peer, secure] = [await freePort(), await freePort(), await freePort()];
  const kids: ChildProcess[] = [];
  const start = (cmd: string, args: string[], log: string) => {
    const p = spawn(cmd, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let tail = '';
    const keep = (d: Buffer) => (tail = (tail + d.toString()).slice(-8000));
    p.stdout!.on('data', keep);
    p.stderr!.on('data', keep);
    p.on('exit', () => writeFileSync(join(work, log), tail));
    kids.push(p);
    return { proc: p, tail: () => tail };
  };
  const stop = async () => {
    for (const k of kids.reverse()) await stopGroup(k);
    rmSync(work, { recursive: true, force: true });
  };
  try {
    const etcdProc = start(
      etcd,
      [
        '--data-dir',
        join(work, 'etcd'),
        '--listen-client-urls',
        `http://127.0.0.1:${client}`,
        '--advertise-client-urls',
        `http://127.0.0.1:${client}`,
        '--listen-peer-urls',
        `http://127.0.0.1:${peer}`,
        '--initial-advertise-peer-urls',
        `http://127.0.0.1:${peer}`,
        '--initial-cluster',
        `default=http://127.0.0.1:${peer}`,
      ],
      'etcd.log',
    );
    // Service-account tokens need a signing key; the admin is a static token of the system:masters group.
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    writeFileSync(join(work, 'sa.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
    writeFileSync(join(work, 'sa.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
    const token = randomBytes(16).toString('hex');
    writeFileSync(join(work, 'tokens.csv'), `${token},admin,admin,"system:masters"\n`, { mode: 0o600 });
    const api = start(
      bins.apiserver,
      [
        `--etcd-servers=http://127.0.0.1:${client}`,
        '--bind-address=127.0.0.1',
        `--secure-port=${secure}`,
        `--cert-dir=${join(work, 'certs')}`,
        `--token-auth-file=${join(work, 'tokens.csv')}`,
        '--authorization-mode=RBAC',
        '--service-account-issuer=https://kubernetes.default.svc',
        `--service-account-key-file=${join(work, 'sa.pub')}`,
        `--service-account-signing-key-file=${join(work, 'sa.key')}`,
        '--service-cluster-ip-range=10.0.0.0/24',
        // No controller manager makes the namespace's `default` service account; the admission that waits for it
        // is off (the operator's pods name that account).
        '--disable-admission-plugins=ServiceAccount',
      ],
      'apiserver.log',
    );
    const kubeconfig = join(work, 'kubeconfig');
    writeFileSync(
      kubeconfig,
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [
          { name: 'local', cluster: { server: `https://127.0.0.1:${secure}`, 'insecure-skip-tls-verify': true } },
        ],
        users: [{ name: 'admin', user: { token } }],
        contexts: [{ name: 'local', context: { cluster: 'local', user: 'admin', namespace: 'default' } }],
        'current-context': 'local',
      }),
      { mode: 0o600 },
    );
    const env = { PATH: process.env.PATH ?? '', HOME: work, KUBECONFIG: kubeconfig };
    const tryKubectl = (args: string[], input?: string) => {
      try {
        const out = execFileSync(bins.kubectl, args, { env, encoding: 'utf8', input, timeout: 60_000, stdio: 'pipe' });
        return { code: 0, out };
      } catch (e) {
        const err = e as { status: number | null; stdout?: string; stderr?: string };
        return { code: err.status ?? -1, out: `${err.stdout ?? ''}${err.stderr ?? ''}` };
      }
    };
    const deadline = Date.now() + 90_000;
    for (;;) {
      if (tryKubectl(['get', '--raw', '/readyz']).code === 0) break;
      for (const [name, p] of [
        ['etcd', etcdProc],
        ['kube-apiserver', api],
      ] as const)
        if (p.proc.exitCode !== null) throw new Error(`${name} exited: ${p.tail().slice(-600)}`);
      if (Date.now() > deadline) throw new Error(`kube-apiserver not ready in 90 s: ${api.tail().slice(-600)}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    return {
      kubectl(args, input) {
        const r = tryKubectl(args, input);
        if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} (exit ${r.code}): ${r.out.trim()}`);
        return r.out;
      },
      tryKubectl: (args) => tryKubectl(args),
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
