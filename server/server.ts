// The reference voice server: its parts wired together (HTTP API, admission, connections, device states) on one
// port, and its lifecycle: listen, a graceful drain, a close, a forced close.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { CLOSE, closeCodeLabel, MAX_TEXT_BYTES } from '../core/protocol.ts';
import { isLoopbackHost } from '../core/run-config.ts';
import { capPendingUpgrades, handleUpgrade, type Admission } from './admission.ts';
import { loadReplies } from './audio.ts';
import { httpApi } from './http-api.ts';
import { defaultConfig, effectiveIdleTimeoutMs, tokenBindings, type ServerConfig } from './config.ts';
import { Connection, type ConnectionHost } from './connection.ts';
import { DeviceRegistry } from './devices.ts';
import { ServerMetrics } from './metrics.ts';

export interface VoiceServer {
  readonly config: ServerConfig;
  readonly port: number;
  /** http://host:port */
  readonly httpUrl: string;
  /** ws://host:port */
  readonly wsUrl: string;
  readonly metrics: ServerMetrics;
  connectionCount(): number;
  /** Stop accepting, close every device with 1012 once its reply is done (at most drainMs), then stop. */
  drain(): Promise<void>;
  /** Stop at once: close every socket with 1001 and free the port. */
  close(): Promise<void>;
  /** A second signal during a drain: close every socket with 1001 now, without waiting for the drain. */
  forceClose(): Promise<void>;
}

export async function startVoiceServer(overrides: Partial<ServerConfig> = {}): Promise<VoiceServer> {
  // An override given as undefined keeps the default (a spread would put undefined in its place).
  const given = Object.fromEntries(
    Object.entries(overrides).filter(([, v]) => v !== undefined),
  ) as Partial<ServerConfig>;
  const cfg: ServerConfig = { ...defaultConfig, ...given };
  loadReplies(); // fail at start, not at the first wake, if an asset is missing
  const metrics = new ServerMetrics();
  const started = Date.now();
  const connections = new Set<Connection>();
  let draining = false;
  let drainWake: (() => void) | null = null;
  const log = cfg.verbose ? (line: string) => process.stderr.write(`[server] ${line}\n`) : () => {};

  const registry = new DeviceRegistry(cfg, metrics, () => drainWake?.());
  // Token → the device ids it may claim (null: any).
  const tokens = tokenBindings(cfg.tokens);
  // Off loopback with tokens, /health and /metrics ask for a token too.
  const httpNeedsToken = tokens.size > 0 && !isLoopbackHost(cfg.host);
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_TEXT_BYTES,
    clientTracking: false,
    perMessageDeflate: false,
  });

  const host: ConnectionHost = {
    cfg,
    metrics,
    idleTimeoutMs: effectiveIdleTimeoutMs(cfg),
    attach: (conn, id, resume) => registry.attach(conn, id, resume),
    closed: (conn, code) => {
      connections.delete(conn);
      metrics.connections.set(connections.size);
      // Codes come from clients too: the label stays bounded to the ones the protocol knows.
      metrics.closed.labels(closeCodeLabel(code)).inc();
      registry.detach(conn);
      drainWake?.();
    },
    sessionDone: () => drainWake?.(),
    log,
  };

  // Headers must be complete within upgradeTimeoutMs (checked every 500 ms): a slowloris upgrade is closed, not kept.
  const http: Server = createServer(
    {
      headersTimeout: cfg.upgradeTimeoutMs,
      requestTimeout: cfg.upgradeTimeoutMs + 1000,
      connectionsCheckingInterval: 500,
    },
    (req, res) => {
      settled(req.socket);
      httpApi(req, res, {
        metrics,
        tokens,
        httpNeedsToken,
        started,
        draining: () => draining,
        connections: () => connections.size,
        sessions: () => registry.activeSessions(),
      });
    },
  );
  http.keepAliveTimeout = 5000;

  const settled = capPendingUpgrades(http, cfg, metrics);
  const admission: Admission = {
    cfg,
    metrics,
    wss,
    tokens,
    draining: () => draining,
    connectionCount: () => connections.size,
    admit(ws, route, claim) {
      metrics.opened.inc();
      const conn = new Connection(
        ws,
        registry.nextConnectionId(),
        host,
        route.xiaozhi ? null : route.deviceId,
        route.resume,
        claim,
        route.xiaozhi ?? null,
      );
      connections.add(conn);
      metrics.connections.set(connections.size);
    },
  };
  http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    settled(socket);
    handleUpgrade(admission, req, socket, head);
  });

  await new Promise<void>((resolve, reject) => {
    const onError = (e: Error) => reject(e);
    http.once('error', onError);
    http.listen(cfg.port, cfg.host, () => {
      http.off('error', onError);
      resolve();
    });
  });
  http.on('error', (e) => log(`http: ${e.message}`));
  const port = (http.address() as AddressInfo).port;
  const hostForUrl = cfg.host.includes(':') ? `[${cfg.host}]` : cfg.host;

  let stopped: Promise<void> | null = null;
  const shutdown = async (closeCode: number, reason: string): Promise<void> => {
    for (const c of connections) c.close(closeCode, reason);
    // Sockets that ignore the close frame are terminated by the connection after 2 s.
    const deadline = Date.now() + 3000;
    while (connections.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const c of connections) c.ws.terminate();
    registry.clear();
    wss.close();
    http.closeAllConnections();
    await new Promise<void>((r) => http.close(() => r()));
    metrics.stop();
  };

  const server: VoiceServer = {
    config: cfg,
    port,
    httpUrl: `http://${hostForUrl}:${port}`,
    wsUrl: `ws://${hostForUrl}:${port}`,
    metrics,
    connectionCount: () => connections.size,
    drain() {
      if (stopped) return stopped;
      draining = true;
      stopped = (async () => {
        const deadline = Date.now() + cfg.drainMs;
        // Devices with nothing in flight go now; the others once their reply ends or the deadline passes.
        const sweep = (): void => {
          for (const c of connections) {
            if (!c.inFlight || Date.now() >= deadline) c.close(CLOSE.SERVICE_RESTART, 'service restart');
          }
        };
        sweep();
        while (connections.size > 0 && Date.now() < deadline) {
          await new Promise<void>((r) => {
            drainWake = r;
            setTimeout(r, 100);
          });
          drainWake = null;
          sweep();
        }
        await shutdown(CLOSE.SERVICE_RESTART, 'service restart');
      })();
      return stopped;
    },
    close() {
      if (stopped) return stopped;
      draining = true;
      stopped = shutdown(CLOSE.GOING_AWAY, 'going away');
      return stopped;
    },
    forceClose() {
      draining = true;
      // Whatever a drain still waits for: every socket gets 1001 now; the drain's own shutdown then finds none.
      const now = shutdown(CLOSE.GOING_AWAY, 'going away');
      stopped ??= now;
      return now;
    },
  };
  return server;
}
