// Brings up the stack (reference server, toxiproxy-server, the proxies of scripts/proxies.json) and tears it all down.
import { WakestormError } from '../core/errors.ts';
import type { ChildProcess } from 'node:child_process';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus } from 'node:os';
import { NUMERIC_FLAGS, type ServerConfig } from '../server/config.ts';
import { loadProxyLayout, type ProxySpec } from './proxy-layout.ts';
import { ToxiproxyClient } from './toxiproxy.ts';
import { guardedSpawn } from './guarded-spawn.ts';
import { writeSecretFile } from './secret.ts';
import { requireTools } from './tools.ts';

export interface StackOptions {
  /** Put Toxiproxy in front of this server (http(s):// or ws(s)://host:port) instead of starting the reference one. */
  serverUrl?: string;
  serverPort?: number;
  toxiproxyPort?: number;
  /** Device-facing port per proxy name; defaults from scripts/proxies.json. 0 picks a free port. */
  proxyPorts?: Record<string, number>;
  /** Flags for the reference server. */
  server?: Partial<ServerConfig>;
  /** Progress lines (what started where). */
  log?: (line: string) => void;
  healthTimeoutMs?: number;
  /** Port of the control API; 0 (default) picks a free one. */
  controlPort?: number;
  /**
   * Toxiproxy processes, each with its own copy of the proxies (default 1). Toxiproxy holds two descriptors per
   * device, so one process stops near (open-file limit / 2) devices; shard 1.. listen on free ports.
   */
  toxiproxyShards?: number;
}

/** One toxiproxy-server process and its proxies. */
export interface ToxiproxyShard {
  toxiproxyUrl: string;
  toxiproxy: ToxiproxyClient;
  pid: number;
  proxies: Record<string, { wsUrl: string; listenPort: number; upstream: string }>;
  /** ws:// base through this shard's 'voice' proxy. */
  targetUrl: string;
}

export interface Stack {
  /** http://host:port of the voice server (reference or the user's). */
  serverHttpUrl: string;
  /** ws:// base of the server itself, bypassing Toxiproxy. */
  serverWsUrl: string;
  toxiproxyUrl: string;
  /** ws:// base devices use, through the proxy, per proxy name. */
  proxies: Record<string, { wsUrl: string; listenPort: number; upstream: string }>;
  /** ws:// base through the 'voice' proxy (of the first shard). */
  targetUrl: string;
  /** Every Toxiproxy process; the fields above are shard 0's. Devices spread over the shards' target URLs. */
  shards: ToxiproxyShard[];
  /** The stack's control API (POST /server/stop, /server/start) for server-restart faults; '' when it fronts --server-url. */
  controlUrl: string;
  toxiproxy: ToxiproxyClient;
  serverPid: number | null;
  toxiproxyPid: number;
  /**
   * Calls `fn` when a process of the stack exits on its own while the stack runs (not by stop() or a planned
   * server-restart): `tool` says whose fault that is. A dead Toxiproxy makes a run INVALID; a dead server is the server's.
   */
  onExit(fn: (e: { tool: 'toxiproxy' | 'server'; message: string }) => void): void;
  stop(): Promise<void>;
}

export class StackError extends WakestormError {
  constructor(message: string) {
    super(message, 1);
  }

  override name = "StackError";
}

/** The shards' device targets and Toxiproxy APIs as the comma-separated TARGET_URL and TOXIPROXY_URL k6 takes. */
export function shardUrls(stack: Pick<Stack, 'shards'>): { targetUrl: string; toxiproxyUrl: string } {
  return { targetUrl: stack.shards.map((sh) => sh.targetUrl).join(','), toxiproxyUrl: stack.shards.map((sh) => sh.toxiproxyUrl).join(',') };
}

/** This process's hard open-file limit (children cannot go above it without CAP_SYS_RESOURCE). */
export function hardFdLimit(): number {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const hard = line?.trim().split(/\s+/)[4];
    return hard === undefined || hard === 'unlimited' ? Infinity : Number(hard);
  } catch {
    return Infinity;
  }
}

/**
 * Toxiproxy processes a fleet needs: each proxied device holds two descriptors in Toxiproxy (device side and
 * server side), so one process carries about (hard limit - headroom) / 2 devices.
 */
export function toxiproxyShardsFor(devices: number, hardLimit = hardFdLimit()): number {
  if (!Number.isFinite(hardLimit)) return 1;
  const perShard = Math.max(1, Math.floor((hardLimit - 1000) / 2));
  return Math.min(16, Math.max(1, Math.ceil(devices / perShard)));
}

/** Resolves to true if 127.0.0.1:port can be bound now. */
function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

export async function pickFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitHealthy(url: string, timeoutMs: number, child: ChildProcess | null, what: string, tail: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child && child.exitCode !== null) throw new StackError(`${what} exited with code ${child.exitCode} before it was healthy: ${tail()}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      if (res.ok) return;
    } catch {
      /* not up yet */
    }
    if (Date.now() > deadline) throw new StackError(`${what} never got healthy at ${url} within ${timeoutMs} ms${tail() ? `: ${tail()}` : ''}`);
    await sleep(100);
  }
}

function collect(child: ChildProcess): () => string {
  let buf = '';
  const add = (d: Buffer) => (buf = (buf + d.toString()).slice(-2000));
  child.stdout?.on('data', add);
  child.stderr?.on('data', add);
  return () => buf.trim().split('\n').slice(-2).join(' | ');
}

function stopChild(child: ChildProcess | null, graceMs: number): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

/** The server flags as CLI arguments for a child `wakestorm server`. Tokens never go on a command line (ps shows it). */
export function serverArgs(cfg: Partial<ServerConfig>): string[] {
  const args: string[] = [];
  for (const f of NUMERIC_FLAGS) {
    if (f.key === 'port') continue;
    const v = cfg[f.key];
    if (v !== undefined) args.push(f.flag, String(v));
  }
  if (cfg.ttsPace) args.push('--tts-pace', cfg.ttsPace);
  if (cfg.verbose) args.push('--verbose');
  return args;
}

function upstreamOf(url: string): { hostPort: string; http: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new StackError(`--server-url must be a URL like ws://127.0.0.1:8080, got '${url}'`);
  }
  if (!['ws:', 'wss:', 'http:', 'https:'].includes(u.protocol)) throw new StackError(`--server-url must be ws:// or http://, got '${url}'`);
  const port = u.port || (u.protocol === 'wss:' || u.protocol === 'https:' ? '443' : '80');
  const host = u.hostname;
  const http = `${u.protocol.replace('ws', 'http')}//${u.host}`;
  return { hostPort: `${host}:${port}`, http };
}

export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const log = opts.log ?? (() => {});
  const tools = requireTools();
  const layout: ProxySpec[] = loadProxyLayout();
  const healthTimeoutMs = opts.healthTimeoutMs ?? 20_000;

  // Every port is checked before anything starts, so a clash is one clear line and nothing to clean up.
  const toxiproxyPort = opts.toxiproxyPort ?? 8474;
  const serverPort = opts.serverUrl ? null : (opts.serverPort ?? 8080);
  const proxyPorts: Record<string, number> = {};
  for (const p of layout) {
    const want = opts.proxyPorts?.[p.name] ?? p.listen_port;
    proxyPorts[p.name] = want === 0 ? await pickFreePort() : want;
  }
  const shardCount = opts.toxiproxyShards ?? 1;
  if (!Number.isInteger(shardCount) || shardCount < 1 || shardCount > 16) throw new StackError(`toxiproxy shards must be an integer from 1 to 16, got ${shardCount}`);
  const checks: [number, string][] = [[toxiproxyPort, 'Toxiproxy API (--toxiproxy-port)'], ...layout.map((p) => [proxyPorts[p.name]!, `proxy '${p.name}' (--proxy-port)`] as [number, string])];
  // Shards after the first take free ports: their API and one listener per proxy.
  const shardPorts: { api: number; proxies: Record<string, number> }[] = [{ api: toxiproxyPort, proxies: proxyPorts }];
  for (let k = 1; k < shardCount; k++) {
    const ports: Record<string, number> = {};
    for (const p of layout) ports[p.name] = await pickFreePort();
    shardPorts.push({ api: await pickFreePort(), proxies: ports });
  }
  if (serverPort !== null && serverPort !== 0) checks.push([serverPort, 'reference server (--server-port)']);
  for (const [port, what] of checks) {
    if (!(await portFree(port))) throw new StackError(`port ${port} is already in use, needed for the ${what}: stop what holds it or pick another port`);
  }

  let server: ChildProcess | null = null;
  const toxis: ChildProcess[] = [];
  let serverHttpUrl: string;
  let upstreamHostPort: string;
  let actualServerPort = serverPort ?? 0;
  // Teardown order: the server drains (1012) while the network is still there, then Toxiproxy stops.
  const cleanup = async () => {
    await stopChild(server, (opts.server?.drainMs ?? 5000) + 3000);
    await Promise.all(toxis.map((t) => stopChild(t, 3000)));
    secret?.remove();
  };

  const cli = new URL('../bin/wakestorm.mjs', import.meta.url).pathname;
  // Tokens reach the server child in a private file named by its environment, never on its command line.
  const secret = opts.server?.tokens?.length ? writeSecretFile(opts.server.tokens.join('\n')) : null;
  const serverEnv = secret ? { ...process.env, WAKESTORM_TOKENS_FILE: secret.path, WAKESTORM_TOKEN: undefined } : process.env;
  let stopping = false;
  let serverDown = false;
  const exitListeners: ((e: { tool: 'toxiproxy' | 'server'; message: string }) => void)[] = [];
  const emitExit = (tool: 'toxiproxy' | 'server', what: string, code: number | null, sig: NodeJS.Signals | null) => {
    if (stopping) return;
    const message = `${what} exited during the run (${sig ? `signal ${sig}` : `code ${code}`})`;
    for (const fn of exitListeners) fn({ tool, message });
  };
  const spawnServer = async (): Promise<void> => {
    if (actualServerPort === 0) actualServerPort = await pickFreePort();
    // Its own process group: a terminal's Ctrl-C reaches the CLI only, which tears down in order.
    const child = guardedSpawn(process.execPath, [cli, 'server', '--host', '127.0.0.1', '--port', String(actualServerPort), ...serverArgs(opts.server ?? {})], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: serverEnv,
      detached: true,
    });
    server = child;
    child.once('exit', (code, sig) => {
      if (!serverDown) emitExit('server', `the reference server (pid ${child.pid})`, code, sig);
    });
    const tail = collect(child);
    await waitHealthy(`http://127.0.0.1:${actualServerPort}/health`, healthTimeoutMs, server, 'the reference server', tail);
  };

  try {
    if (opts.serverUrl) {
      const up = upstreamOf(opts.serverUrl);
      serverHttpUrl = up.http;
      upstreamHostPort = up.hostPort;
    } else {
      await spawnServer();
      serverHttpUrl = `http://127.0.0.1:${actualServerPort}`;
      upstreamHostPort = `127.0.0.1:${actualServerPort}`;
      log(`server     ${serverHttpUrl} (pid ${server!.pid})`);
    }

    const shards: ToxiproxyShard[] = [];
    // Shards split the cores instead of each scheduling on all of them: on 2 cores with 2 shards, GOMAXPROCS=1 each
    // carried the same 10,000-device load at 54% of a core instead of 71% (less cross-core scheduling and futex churn).
    const shardEnv = shardCount > 1 && !process.env.GOMAXPROCS ? { ...process.env, GOMAXPROCS: String(Math.max(1, Math.floor(cpus().length / shardCount))) } : process.env;
    for (const [k, ports] of shardPorts.entries()) {
      const toxi = guardedSpawn(tools.toxiproxyServer, ['-host', '127.0.0.1', '-port', String(ports.api)], { stdio: ['ignore', 'pipe', 'pipe'], env: shardEnv, detached: true });
      toxis.push(toxi);
      toxi.once('exit', (code, sig) => emitExit('toxiproxy', `toxiproxy-server${shardCount > 1 ? ` shard ${k}` : ''} (pid ${toxi.pid})`, code, sig));
      const toxiTail = collect(toxi);
      const toxiproxyUrl = `http://127.0.0.1:${ports.api}`;
      try {
        await waitHealthy(`${toxiproxyUrl}/version`, 10_000, toxi, 'toxiproxy-server', toxiTail);
      } catch (e) {
        throw new StackError(`Toxiproxy won't start: ${(e as Error).message}`);
      }
      const tag = shardCount > 1 ? ` shard ${k}` : '';
      log(`toxiproxy  ${toxiproxyUrl} (pid ${toxi.pid})${tag}`);

      const toxiproxy = new ToxiproxyClient(toxiproxyUrl);
      const proxies: ToxiproxyShard['proxies'] = {};
      for (const p of layout) {
        const upstream = p.upstream === 'server' ? upstreamHostPort : p.upstream;
        const listen = `127.0.0.1:${ports.proxies[p.name]}`;
        try {
          await toxiproxy.createProxy({ name: p.name, listen, upstream });
        } catch (e) {
          throw new StackError(`creating proxy '${p.name}' (${listen} -> ${upstream}) failed: ${(e as Error).message}`);
        }
        proxies[p.name] = { wsUrl: `ws://${listen}`, listenPort: ports.proxies[p.name]!, upstream };
        log(`proxy      ${p.name}: ws://${listen} -> ${upstream}${tag}`);
      }
      shards.push({ toxiproxyUrl, toxiproxy, pid: toxi.pid!, proxies, targetUrl: proxies.voice?.wsUrl ?? Object.values(proxies)[0]!.wsUrl });
    }
    const { toxiproxyUrl, toxiproxy, proxies } = shards[0]!;

    // The control API lets a k6 chaos VU restart the reference server (server-restart fault).
    let control: HttpServer | null = null;
    let controlUrl = '';
    if (!opts.serverUrl) {
      let busy: Promise<void> = Promise.resolve();
      control = createHttpServer((req, res) => {
        const route = `${req.method} ${req.url}`;
        const done = (code: number, body: object) => res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
        if (route === 'POST /server/stop' || route === 'POST /server/start') {
          req.resume();
          busy = busy.then(async () => {
            try {
              if (route === 'POST /server/stop' && !serverDown) {
                serverDown = true;
                log('control    server-restart: draining the server (1012)');
                await stopChild(server, (opts.server?.drainMs ?? 5000) + 3000);
              } else if (route === 'POST /server/start' && serverDown) {
                await spawnServer();
                serverDown = false;
                log(`control    server-restart: server up again (pid ${server!.pid})`);
              }
              done(200, { ok: true, server: serverDown ? 'down' : 'up' });
            } catch (e) {
              done(500, { ok: false, error: (e as Error).message });
            }
          });
        } else if (route === 'GET /health') done(200, { ok: true, server: serverDown ? 'down' : 'up' });
        else done(404, { ok: false });
      });
      const cp = opts.controlPort ?? 0;
      await new Promise<void>((resolve, reject) => {
        control!.once('error', (e) => reject(new StackError(`control API cannot listen on ${cp}: ${e.message}`)));
        control!.listen(cp, '127.0.0.1', () => resolve());
      });
      controlUrl = `http://127.0.0.1:${(control.address() as { port: number }).port}`;
      log(`control    ${controlUrl} (server-restart)`);
    }

    let stopped: Promise<void> | null = null;
    const stack: Stack = {
      serverHttpUrl,
      serverWsUrl: serverHttpUrl.replace(/^http/, 'ws'),
      toxiproxyUrl,
      proxies,
      targetUrl: shards[0]!.targetUrl,
      shards,
      controlUrl,
      toxiproxy,
      get serverPid() {
        return server?.pid ?? null;
      },
      toxiproxyPid: shards[0]!.pid,
      onExit(fn) {
        exitListeners.push(fn);
      },
      stop() {
        if (stopped) return stopped;
        stopping = true;
        stopped = (async () => {
          // No toxic may outlive the stack: reset, then remove the proxies, then stop the processes.
          for (const sh of shards) {
            try {
              await sh.toxiproxy.reset();
              for (const name of Object.keys(sh.proxies)) await sh.toxiproxy.deleteProxy(name);
            } catch {
              /* toxiproxy already gone: its proxies went with it */
            }
          }
          if (control) {
            control.closeAllConnections();
            await new Promise<void>((r) => control!.close(() => r()));
          }
          await cleanup();
        })();
        return stopped;
      },
    };
    return stack;
  } catch (e) {
    await cleanup();
    throw e;
  }
}
