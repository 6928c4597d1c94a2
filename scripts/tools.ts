// Finds or builds the pinned k6 and Toxiproxy binaries: PATH at the pinned version, else the per-version cache, else `go build`.
import { WakestormError } from '../core/errors.ts';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, join } from 'node:path';
import { withoutSecrets } from './guarded-spawn.ts';

/** The one place the tool versions are pinned. */
export const PINS = {
  k6: {
    /**
     * k6's current major line only (k6 is AGPL-3.0: wakestorm runs it as a separate program and links nothing into it).
     * v2.3.0 is listed by the proxy but its zip is refused here.
     */
    candidates: [{ module: 'go.k6.io/k6/v2', version: 'v2.2.0' }],
  },
  toxiproxy: { module: 'github.com/Shopify/toxiproxy/v2', version: 'v2.12.0' },
  /**
   * The k6-operator release whose TestRun CRD `wakestorm k8s` writes for (Apache-2.0; only its CRD is read, in the
   * tests). v0.0.19 is the newest the Go module proxy serves here.
   */
  k6Operator: {
    module: 'github.com/grafana/k6-operator',
    version: 'v0.0.19',
    crd: 'config/crd/bases/k6.io_testruns.yaml',
  },
  /**
   * The Kubernetes release whose kube-apiserver and kubectl the cluster test builds (Apache-2.0; test only, never a
   * dependency of wakestorm): a real API server checks the `wakestorm k8s` bundle as `kubectl apply` sends it. Its
   * staging modules (k8s.io/api, …) are the same release's v0.x.
   */
  kubernetes: { module: 'k8s.io/kubernetes', version: 'v1.37.2', staging: 'v0.37.2' },
  /** k6 v2 and Toxiproxy v2.12 want Go 1.25; the engine's go.mod (golang.org/x/crypto v0.59) wants 1.26. */
  minGo: '1.26',
} as const;

export class ToolError extends WakestormError {
  constructor(message: string) {
    super(message, 1);
  }

  override name = 'ToolError';
}

export interface Tools {
  k6: string;
  k6Version: string;
  toxiproxyServer: string;
  toxiproxyCli: string;
  toxiproxyVersion: string;
}

export function cacheDir(): string {
  return process.env.WAKESTORM_CACHE || join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'wakestorm');
}

/**
 * Environment for every k6 the project starts (`k6 inspect` and `k6 version` too): no network to resolve extensions
 * from, and none of the user's secrets (the devices read the token from a private file).
 */
export function k6Env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...withoutSecrets(process.env),
    K6_AUTO_EXTENSION_RESOLUTION: 'false',
    K6_NO_USAGE_REPORT: 'true',
    ...extra,
  };
}

/** The path of a command on PATH, or null. */
export function which(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const p = join(dir, name);
    if (dir && existsSync(p)) return p;
  }
  return null;
}

function versionOf(bin: string, args: string[]): string {
  try {
    return execFileSync(bin, args, {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      env: k6Env(),
      timeout: 20_000,
    }).trim();
  } catch {
    return '';
  }
}

const strip = (v: string) => v.replace(/^v/, '');

function k6Paths(version: string) {
  return join(cacheDir(), `k6-${version}`, 'k6');
}
function toxiPaths() {
  const dir = join(cacheDir(), `toxiproxy-${PINS.toxiproxy.version}`);
  return { server: join(dir, 'toxiproxy-server'), cli: join(dir, 'toxiproxy-cli') };
}

/** Finds the tools without building anything; null fields are missing. */
export function findTools(): {
  k6: { path: string; version: string } | null;
  toxiproxy: { server: string; cli: string } | null;
} {
  let k6: { path: string; version: string } | null = null;
  const onPath = which('k6');
  for (const c of PINS.k6.candidates) {
    if (onPath && versionOf(onPath, ['version']).includes(`k6 ${c.version} `)) {
      k6 = { path: onPath, version: c.version };
      break;
    }
    const cached = k6Paths(c.version);
    if (existsSync(cached)) {
      k6 = { path: cached, version: c.version };
      break;
    }
  }
  let toxiproxy: { server: string; cli: string } | null = null;
  const tsOnPath = which('toxiproxy-server');
  const tcOnPath = which('toxiproxy-cli');
  const want = strip(PINS.toxiproxy.version);
  if (tsOnPath && tcOnPath && versionOf(tsOnPath, ['-version']).includes(want)) {
    toxiproxy = { server: tsOnPath, cli: tcOnPath };
  } else {
    const p = toxiPaths();
    if (existsSync(p.server) && existsSync(p.cli)) toxiproxy = p;
  }
  return { k6, toxiproxy };
}

export function missingToolsLine(): string {
  return (
    `wakestorm: k6 ${PINS.k6.candidates[0].version} and Toxiproxy ${PINS.toxiproxy.version} are needed: ` +
    `install Go >= ${PINS.minGo} and run 'npx wakestorm setup', or put k6 ${PINS.k6.candidates[0].version} and ` +
    `toxiproxy-server/toxiproxy-cli ${PINS.toxiproxy.version} on PATH`
  );
}

/** The tools, or a ToolError with the one line that says how to get them. */
export function requireTools(): Tools {
  const { k6, toxiproxy } = findTools();
  if (!k6 || !toxiproxy) throw new ToolError(missingToolsLine());
  return {
    k6: k6.path,
    k6Version: k6.version,
    toxiproxyServer: toxiproxy.server,
    toxiproxyCli: toxiproxy.cli,
    toxiproxyVersion: PINS.toxiproxy.version,
  };
}

export function goVersion(): string | null {
  const out = versionOf('go', ['version']);
  const m = /go(\d+)\.(\d+)/.exec(out);
  return m ? `${m[1]}.${m[2]}` : null;
}

function goIsNewEnough(v: string): boolean {
  const [a, b] = v.split('.').map(Number);
  const [x, y] = PINS.minGo.split('.').map(Number);
  return a! > x! || (a === x && b! >= y!);
}

export type Progress = (done: number, total: number, label: string) => void;

export function run(
  cmd: string,
  args: string[],
  cwd: string,
  env: NodeJS.ProcessEnv,
  onLine?: (l: string) => void,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let tail = '';
    const feed = (d: Buffer) => {
      const s = d.toString();
      out += s;
      tail = (tail + s).slice(-4000);
      if (onLine) for (const l of s.split('\n')) if (l.trim()) onLine(l.trim());
    };
    p.stdout.on('data', feed);
    p.stderr.on('data', feed);
    p.on('error', reject);
    p.on('close', (code) =>
      code === 0
        ? resolve(out)
        : reject(
            new Error(`${cmd} ${args.join(' ')} failed (${code}): ${tail.trim().split('\n').slice(-3).join(' | ')}`),
          ),
    );
  });
}

/**
 * Builds `pkg` from `module@version` in a throwaway module. `go install mod@ver` is not used: it looks up
 * the module's deprecation through the version list, which the proxy refuses for k6 v2 here. `replace` lines pin
 * modules the built one replaces with local folders (Kubernetes' staging modules), which `go install` cannot build.
 */
export async function goBuild(
  module: string,
  version: string,
  pkgs: { pkg: string; out: string }[],
  ldflags: string,
  progress: Progress,
  replace: string[] = [],
): Promise<void> {
  const work = join(cacheDir(), 'build', `${module.replace(/[^A-Za-z0-9]+/g, '_')}-${version}`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const env = { ...process.env, CGO_ENABLED: '0', GOFLAGS: '-mod=mod', GOTOOLCHAIN: 'local' };
  writeFileSync(
    join(work, 'go.mod'),
    `module wakestorm.local/toolbuild\n\ngo ${PINS.minGo}\n\nrequire ${module} ${version}\n` +
      replace.map((r) => `\nreplace ${r}\n`).join(''),
  );
  writeFileSync(
    join(work, 'tools.go'),
    `//go:build tools\n\npackage tools\n\n${pkgs.map((p) => `import _ "${p.pkg}"`).join('\n')}\n`,
  );
  progress(0, 1, `resolving ${module}@${version}`);
  await run('go', ['mod', 'tidy'], work, env);
  const deps = new Set<string>();
  for (const p of pkgs) {
    const list = await run('go', ['list', '-deps', p.pkg], work, env);
    for (const l of list.split('\n')) if (l.trim()) deps.add(l.trim());
  }
  let done = 0;
  for (const p of pkgs) {
    const tmp = `${p.out}.tmp-${process.pid}`;
    mkdirSync(join(p.out, '..'), { recursive: true });
    await run('go', ['build', '-v', '-trimpath', '-ldflags', ldflags, '-o', tmp, p.pkg], work, env, (line) => {
      if (deps.has(line)) progress(++done, deps.size, `building ${module}@${version}`);
    });
    renameSync(tmp, p.out); // never leave a half-written binary where findTools looks
  }
  progress(deps.size, deps.size, `built ${module}@${version}`);
}

/** Makes sure both tools exist, building what is missing. Throws ToolError when it cannot. */
export async function ensureTools(progress: Progress): Promise<Tools> {
  const found = findTools();
  if (found.k6 && found.toxiproxy) return requireTools();
  const gv = goVersion();
  if (!gv || !goIsNewEnough(gv))
    throw new ToolError(missingToolsLine() + (gv ? ` (found Go ${gv})` : ' (no Go found)'));
  if (!found.toxiproxy) {
    const { module, version } = PINS.toxiproxy;
    const p = toxiPaths();
    await goBuild(
      module,
      version,
      [
        { pkg: `${module}/cmd/server`, out: p.server },
        { pkg: `${module}/cmd/cli`, out: p.cli },
      ],
      `-s -w -X ${module}.Version=${strip(version)}`,
      progress,
    );
  }
  if (!found.k6) {
    const errors: string[] = [];
    for (const c of PINS.k6.candidates) {
      try {
        await goBuild(c.module, c.version, [{ pkg: c.module, out: k6Paths(c.version) }], '-s -w', progress);
        break;
      } catch (e) {
        errors.push(`${c.module}@${c.version}: ${(e as Error).message}`);
      }
    }
    if (!findTools().k6) throw new ToolError(`wakestorm: could not build k6: ${errors.join('; ')}`);
  }
  return requireTools();
}
