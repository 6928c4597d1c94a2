// Brings up the stack (reference server, toxiproxy-server, the proxies of scripts/proxies.json) and tears it all down.
import { WakestormError } from '../core/errors.ts';
import type { ChildProcess } from 'node:child_process';
import { createServer as createHttpServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { INSTANCE_BOUNDS } from '../core/run-config.ts';
import { defaultConfig, NUMERIC_FLAGS, type ServerConfig } from '../server/config.ts';
import { loadProxyLayout, type ProxySpec } from './proxy-layout.ts';
import { ToxiproxyClient } from './toxiproxy.ts';
import { guardedSpawn } from './guarded-spawn.ts';
import { outputTail, pickFreePort, portFree, stopChild, waitHealthy } from './process-control.ts';
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
interface ToxiproxyShard {
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
  /** Shard 0's API; '' with no Toxiproxy (toxiproxyShards 0: run --direct). */
  toxiproxyUrl: string;
  /** ws:// base devices use, through the proxy, per proxy name. */
  proxies: Record<string, { wsUrl: string; listenPort: number; upstream: string }>;
  /** ws:// base through the 'voice' proxy (of the first shard). */
  targetUrl: string;
  /** Every Toxiproxy process; the fields above are shard 0's. Devices spread over the shards' target URLs. */
  shards: ToxiproxyShard[];
  /** The stack's control API (POST /server/stop, /server/start) for server-restart faults; '' when it fronts --server-url. */
  controlUrl: string;
  toxiproxy: ToxiproxyClient | null;
  serverPid: number | null;
  toxiproxyPid: number | null;
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

  override name = 'StackError';
}

/** The shards' device targets and Toxiproxy APIs as the comma-separated TARGET_URL and TOXIPROXY_URL k6 takes. */
export function shardUrls(stack: Pick<Stack, 'shards'>): { targetUrl: string; toxiproxyUrl: string } {
  return {
    targetUrl: stack.shards.map((sh) => sh.targetUrl).join(','),
    toxiproxyUrl: stack.shards.map((sh) => sh.toxiproxyUrl).join(','),
  };
}

/** This process's hard open-file limit (children cannot go above it without CAP_SYS_RESOURCE). */
function hardFdLimit(): number {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
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

/**
 * k6 instances a fleet needs (`wakestorm run --instances`): each holds one descriptor per device (in k6, or in its
 * device engine), so one process carries about (hard limit - headroom) devices.
 */
export function instancesFor(devices: number, hardLimit = hardFdLimit()): number {
  if (!Number.isFinite(hardLimit)) return 1;
  const perInstance = Math.max(1, hardLimit - 1000);
  return Math.min(INSTANCE_BOUNDS.max, Math.max(1, Math.ceil(devices / perInstance)));
}

/**
 * The reference server sized to a fleet, where the flags given do not say: it holds one descriptor per device too, so
 * as many workers as k6 instances (instancesFor), and a connection cap with room for the whole fleet.
 */
export function serverSizedFor(
  devices: number,
  given: Partial<ServerConfig>,
  hardLimit = hardFdLimit(),
): Pick<Partial<ServerConfig>, 'workers' | 'maxConnections'> {
  const out: Pick<Partial<ServerConfig>, 'workers' | 'maxConnections'> = {};
  const workers = instancesFor(devices, hardLimit);
  if (workers > 1 && given.workers === undefined) out.workers = workers;
  if (devices > defaultConfig.maxConnections && given.maxConnections === undefined) out.maxConnections = devices;
  return out;
}

/** The server flags as CLI arguments for a child `wakestorm server`. Tokens never go on a command line (ps shows it). */
function serverArgs(cfg: Partial<ServerConfig>): string[] {
  const args: string[] = [];
  for (const f of NUMERIC_FLAGS) {
    if (f.key === 'port') continue;
    const v = cfg[f.key];
    if (v !== undefined) args.push(f.flag, String(v));
  }
  if (cfg.ttsPace) args.push('--tts-pace', cfg.ttsPace);
  if (cfg.balance) args.push('--balance', cfg.balance);
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
  if (!['ws:', 'wss:', 'http:', 'https:'].includes(u.protocol))
    throw new StackError(`--server-url must be ws:// or http://, got '${url}'`);
  const port = u.port || (u.protocol === 'wss:' || u.protocol === 'https:' ? '443' : '80');
  const host = u.hostname;
  const http = `${u.protocol.replace('ws', 'http')}//${u.host}`;
  return { hostPort: `${host}:${port}`, http };
}

type ExitEvent = { tool: 'toxiproxy' | 'server'; message: string };
const exitMessage = (what: string, code: number | null, sig: NodeJS.Signals | null) =>
  `${what} exited during the run (${sig ? `signal ${sig}` : `code ${code}`})`;

/** Every port the stack needs, checked before anything starts: a clash is one clear line and nothing to clean up. */
async function planPorts(
  opts: StackOptions,
  layout: ProxySpec[],
): Promise<{ serverPort: number | null; shards: { api: number; proxies: Record<string, number> }[] }> {
  const toxiproxyPort = opts.toxiproxyPort ?? 8474;
  const serverPort = opts.serverUrl ? null : (opts.serverPort ?? 8080);
  const proxyPorts: Record<string, number> = {};
  for (const p of layout) {
    const want = opts.proxyPorts?.[p.name] ?? p.listen_port;
    proxyPorts[p.name] = want === 0 ? await pickFreePort() : want;
  }
  const shardCount = opts.toxiproxyShards ?? 1;
  if (!Number.isInteger(shardCount) || shardCount < 0 || shardCount > 16)
    throw new StackError(`toxiproxy shards must be an integer from 1 to 16, got ${shardCount}`);
  // No shard at all: devices that connect to the server itself (run --direct) need no Toxiproxy.
  const checks: [number, string][] = shardCount
    ? [
        [toxiproxyPort, 'Toxiproxy API (--toxiproxy-port)'],
        ...layout.map((p) => [proxyPorts[p.name]!, `proxy '${p.name}' (--proxy-port)`] as [number, string]),
      ]
    : [];
  // Shards after the first take free ports: their API and one listener per proxy.
  const shards = shardCount ? [{ api: toxiproxyPort, proxies: proxyPorts }] : [];
  for (let k = 1; k < shardCount; k++) {
    const ports: Record<string, number> = {};
    for (const p of layout) ports[p.name] = await pickFreePort();
    shards.push({ api: await pickFreePort(), proxies: ports });
  }
  if (serverPort !== null && serverPort !== 0) checks.push([serverPort, 'reference server (--server-port)']);
  for (const [port, what] of checks) {
    if (!(await portFree(port)))
      throw new StackError(
        `port ${port} is already in use, needed for the ${what}: stop what holds it or pick another port`,
      );
  }
  return { serverPort, shards };
}

/** The reference server as a child the stack can stop and start again (a server-restart fault), on one port. */
interface ReferenceServer {
  readonly pid: number | null;
  readonly httpUrl: string;
  /** Stopped on purpose (a planned restart): its exit is not reported. */
  readonly down: boolean;
  start(): Promise<void>;
  /** Drains it (1012 to every device) and waits for it to exit. */
  stop(): Promise<void>;
  /** Removes the private token file (last, after the final stop). */
  dispose(): void;
}

function referenceServer(opts: StackOptions, port: number, onExit: (message: string) => void): ReferenceServer {
  const cli = new URL('../bin/wakestorm.mjs', import.meta.url).pathname;
  // Tokens reach the server child in a private file named by its environment, never on its command line.
  const secret = opts.server?.tokens?.length ? writeSecretFile(opts.server.tokens.join('\n')) : null;
  const env = secret ? { ...process.env, WAKESTORM_TOKENS_FILE: secret.path, WAKESTORM_TOKEN: undefined } : process.env;
  const drainMs = (opts.server?.drainMs ?? 5000) + 3000;
  let child: ChildProcess | null = null;
  let down = false;
  return {
    get pid() {
      return child?.pid ?? null;
    },
    get httpUrl() {
      return `http://127.0.0.1:${port}`;
    },
    get down() {
      return down;
    },
    async start() {
      if (port === 0) port = await pickFreePort();
      // Its own process group: a terminal's Ctrl-C reaches the CLI only, which tears down in order.
      const c = guardedSpawn(
        process.execPath,
        [cli, 'server', '--host', '127.0.0.1', '--port', String(port), ...serverArgs(opts.server ?? {})],
        { stdio: ['ignore', 'pipe', 'pipe'], env, detached: true },
      );
      child = c;
      c.once('exit', (code, sig) => {
        if (!down) onExit(exitMessage(`the reference server (pid ${c.pid})`, code, sig));
      });
      // Ready when it says it listens (every worker of several does), or /health answers. The line counts because a
      // restarted server meets the whole fleet's reconnect storm at once: /health then waits behind thousands of
      // upgrades, and a 1 s health probe can time out for longer than the storm lasts.
      let buf = '';
      const said = new Promise<void>((res) => {
        const onData = (d: Buffer) => {
          buf = (buf + d.toString()).slice(-4096);
          if (/wakestorm server listening on /.test(buf)) {
            c.stdout?.off('data', onData);
            res();
          }
        };
        c.stdout?.on('data', onData);
      });
      const stopWaiting = new AbortController();
      try {
        await Promise.race([
          said,
          waitHealthy(
            `http://127.0.0.1:${port}/health`,
            opts.healthTimeoutMs ?? 20_000,
            c,
            'the reference server',
            outputTail(c),
            stopWaiting.signal,
          ),
        ]);
      } catch (e) {
        throw new StackError((e as Error).message);
      } finally {
        stopWaiting.abort();
      }
      down = false;
    },
    async stop() {
      down = true;
      await stopChild(child, drainMs);
    },
    dispose() {
      secret?.remove();
    },
  };
}

/** One toxiproxy-server on its ports, with the layout's proxies in front of `upstream` (host:port). */
async function startShard(
  k: number,
  count: number,
  ports: { api: number; proxies: Record<string, number> },
  layout: ProxySpec[],
  upstream: string,
  onExit: (message: string) => void,
  log: (l: string) => void,
  /** ws or wss: Toxiproxy passes TCP through, so devices speak the server's own scheme to the proxy. */
  scheme: 'ws' | 'wss',
): Promise<{ shard: ToxiproxyShard; child: ChildProcess }> {
  const tools = requireTools();
  const tag = count > 1 ? ` shard ${k}` : '';
  // Shards split the cores instead of each scheduling on all of them: on 2 cores with 2 shards, GOMAXPROCS=1 each
  // carried the same 10,000-device load at 54% of a core instead of 71% (less cross-core scheduling and futex churn).
  const env =
    count > 1 && !process.env.GOMAXPROCS
      ? { ...process.env, GOMAXPROCS: String(Math.max(1, Math.floor(cpus().length / count))) }
      : process.env;
  const child = guardedSpawn(tools.toxiproxyServer, ['-host', '127.0.0.1', '-port', String(ports.api)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
    detached: true,
  });
  child.once('exit', (code, sig) => onExit(exitMessage(`toxiproxy-server${tag} (pid ${child.pid})`, code, sig)));
  const toxiproxyUrl = `http://127.0.0.1:${ports.api}`;
  try {
    await waitHealthy(`${toxiproxyUrl}/version`, 10_000, child, 'toxiproxy-server', outputTail(child));
  } catch (e) {
    throw Object.assign(new StackError(`Toxiproxy won't start: ${(e as Error).message}`), { child });
  }
  log(`toxiproxy  ${toxiproxyUrl} (pid ${child.pid})${tag}`);
  const toxiproxy = new ToxiproxyClient(toxiproxyUrl);
  const proxies: ToxiproxyShard['proxies'] = {};
  for (const p of layout) {
    const to = p.upstream === 'server' ? upstream : p.upstream;
    const listen = `127.0.0.1:${ports.proxies[p.name]}`;
    try {
      await toxiproxy.createProxy({ name: p.name, listen, upstream: to });
    } catch (e) {
      throw Object.assign(
        new StackError(`creating proxy '${p.name}' (${listen} -> ${to}) failed: ${(e as Error).message}`),
        { child },
      );
    }
    proxies[p.name] = { wsUrl: `${scheme}://${listen}`, listenPort: ports.proxies[p.name]!, upstream: to };
    log(`proxy      ${p.name}: ${scheme}://${listen} -> ${to}${tag}`);
  }
  return {
    shard: {
      toxiproxyUrl,
      toxiproxy,
      pid: child.pid!,
      proxies,
      targetUrl: proxies.voice?.wsUrl ?? Object.values(proxies)[0]!.wsUrl,
    },
    child,
  };
}

/**
 * The control API a k6 chaos VU calls for a server-restart fault (core/toxiproxy-api.ts controlApi): POST
 * /server/stop drains the reference server, POST /server/start brings it back; requests run one at a time.
 */
async function startControlApi(
  server: ReferenceServer,
  port: number,
  log: (l: string) => void,
): Promise<{ url: string; close(): Promise<void> }> {
  let busy: Promise<void> = Promise.resolve();
  const control = createHttpServer((req, res) => {
    const route = `${req.method} ${req.url}`;
    const done = (code: number, body: object) =>
      res.writeHead(code, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    if (route === 'POST /server/stop' || route === 'POST /server/start') {
      req.resume();
      busy = busy.then(async () => {
        try {
          if (route === 'POST /server/stop' && !server.down) {
            log('control    server-restart: draining the server (1012)');
            // Answered once the drain has begun: the drain itself may outlast the caller's wait (replies in flight
            // finish first). A start queued behind it waits for it to end.
            const drained = server.stop();
            done(200, { ok: true, server: 'draining' });
            await drained;
            return;
          } else if (route === 'POST /server/start' && server.down) {
            await server.start();
            log(`control    server-restart: server up again (pid ${server.pid})`);
          }
          done(200, { ok: true, server: server.down ? 'down' : 'up' });
        } catch (e) {
          done(500, { ok: false, error: (e as Error).message });
        }
      });
    } else if (route === 'GET /health') done(200, { ok: true, server: server.down ? 'down' : 'up' });
    else done(404, { ok: false });
  });
  await new Promise<void>((resolve, reject) => {
    control.once('error', (e) => reject(new StackError(`control API cannot listen on ${port}: ${e.message}`)));
    control.listen(port, '127.0.0.1', () => resolve());
  });
  const url = `http://127.0.0.1:${(control.address() as { port: number }).port}`;
  log(`control    ${url} (server-restart)`);
  return {
    url,
    close: async () => {
      control.closeAllConnections();
      await new Promise<void>((r) => control.close(() => r()));
    },
  };
}

export async function startStack(opts: StackOptions = {}): Promise<Stack> {
  const log = opts.log ?? (() => {});
  requireTools();
  const layout: ProxySpec[] = loadProxyLayout();
  const ports = await planPorts(opts, layout);
  let stopping = false;
  const exitListeners: ((e: ExitEvent) => void)[] = [];
  const emitExit = (tool: ExitEvent['tool']) => (message: string) => {
    if (!stopping) for (const fn of exitListeners) fn({ tool, message });
  };
  const server = ports.serverPort === null ? null : referenceServer(opts, ports.serverPort, emitExit('server'));
  const toxis: ChildProcess[] = [];
  let control: { url: string; close(): Promise<void> } | null = null;
  // Teardown order: the server drains (1012) while the network is still there, then Toxiproxy stops.
  const cleanup = async () => {
    stopping = true;
    await control?.close();
    await server?.stop();
    await Promise.all(toxis.map((t) => stopChild(t, 3000)));
    server?.dispose();
  };

  try {
    let serverHttpUrl: string;
    let upstream: string;
    if (opts.serverUrl) {
      const up = upstreamOf(opts.serverUrl);
      serverHttpUrl = up.http;
      upstream = up.hostPort;
    } else {
      await server!.start();
      serverHttpUrl = server!.httpUrl;
      upstream = serverHttpUrl.replace(/^http:\/\//, '');
      log(`server     ${serverHttpUrl} (pid ${server!.pid})`);
    }
    const shards: ToxiproxyShard[] = [];
    for (const [k, p] of ports.shards.entries()) {
      try {
        const { shard, child } = await startShard(
          k,
          ports.shards.length,
          p,
          layout,
          upstream,
          emitExit('toxiproxy'),
          log,
          serverHttpUrl.startsWith('https:') ? 'wss' : 'ws',
        );
        toxis.push(child);
        shards.push(shard);
      } catch (e) {
        const child = (e as { child?: ChildProcess }).child;
        if (child) toxis.push(child);
        throw e;
      }
    }
    if (server) control = await startControlApi(server, opts.controlPort ?? 0, log);

    let stopped: Promise<void> | null = null;
    return {
      serverHttpUrl,
      serverWsUrl: serverHttpUrl.replace(/^http/, 'ws'),
      toxiproxyUrl: shards[0]?.toxiproxyUrl ?? '',
      proxies: shards[0]?.proxies ?? {},
      targetUrl: shards[0]?.targetUrl ?? serverHttpUrl.replace(/^http/, 'ws'),
      shards,
      controlUrl: control?.url ?? '',
      toxiproxy: shards[0]?.toxiproxy ?? null,
      get serverPid() {
        return server?.pid ?? null;
      },
      toxiproxyPid: shards[0]?.pid ?? null,
      onExit(fn) {
        exitListeners.push(fn);
      },
      stop() {
        stopped ??= (async () => {
          stopping = true;
          // No toxic may outlive the stack: reset, then remove the proxies, then stop the processes.
          for (const sh of shards) {
            try {
              await sh.toxiproxy.reset();
              for (const name of Object.keys(sh.proxies)) await sh.toxiproxy.deleteProxy(name);
            } catch {
              /* toxiproxy already gone: its proxies went with it */
            }
          }
          await cleanup();
        })();
        return stopped;
      },
    };
  } catch (e) {
    await cleanup();
    throw e;
  }
}
