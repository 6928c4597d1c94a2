// The reference voice server: its parts wired together (HTTP API, admission, connections, device states) on one
// port, and its lifecycle: listen, a graceful drain, a close, a forced close.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { closeCodeLabel, MAX_TEXT_BYTES } from '../core/protocol.ts';
import { isLoopbackHost } from '../core/run-config.ts';
import { capPendingUpgrades, handleUpgrade, type Admission } from './admission.ts';
import { loadReplies } from './audio.ts';
import { httpApi } from './http-api.ts';
import { defaultConfig, effectiveIdleTimeoutMs, tokenBindings, type ServerConfig } from './config.ts';
import { Connection, type ConnectionHost } from './connection.ts';
import { DeviceRegistry } from './devices.ts';
import { ServerLifecycle } from './lifecycle.ts';
import { ServerMetrics } from './metrics.ts';
import type { ClusterLink, WorkerHandlers } from './cluster.ts';

/** The listening socket's accept queue (capped by the kernel's net.core.somaxconn). */
const ACCEPT_BACKLOG = 4096;

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
  /** What the cluster's primary asks of this server when it is one worker of several (server/cluster.ts). */
  readonly worker: WorkerHandlers;
}

/**
 * Starts the reference server. `cluster` makes it one worker of several sharing the port (server/cluster.ts): devices
 * are claimed from the primary, which moves a device's state here from the worker that held it.
 */
export async function startVoiceServer(
  overrides: Partial<ServerConfig> = {},
  cluster?: ClusterLink,
): Promise<VoiceServer> {
  // An override given as undefined keeps the default (a spread would put undefined in its place).
  const given = Object.fromEntries(
    Object.entries(overrides).filter(([, v]) => v !== undefined),
  ) as Partial<ServerConfig>;
  const cfg: ServerConfig = { ...defaultConfig, ...given };
  loadReplies(); // fail at start, not at the first wake, if an asset is missing
  const metrics = new ServerMetrics();
  const started = Date.now();
  const connections = new Set<Connection>();
  const draining = () => !life.accepting;
  const log = cfg.verbose ? (line: string) => process.stderr.write(`[server] ${line}\n`) : () => {};

  const registry = cluster
    ? new DeviceRegistry(
        cfg,
        metrics,
        () => life.changed(),
        `c-w${cluster.index}`,
        (d) => cluster.expired(d),
      )
    : new DeviceRegistry(cfg, metrics, () => life.changed());
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
    attach: (conn, id, resume) => {
      if (!cluster) return registry.attach(conn, id, resume);
      // The device's state may live in another worker: the primary moves it here first (replacing a live link there).
      void cluster.claim(id).then((moved) => {
        registry.attach(conn, id, resume, moved);
        // The link closed while the state moved: the state waits out its grace window here.
        if (!conn.open) registry.detach(conn);
      });
    },
    closed: (conn, code) => {
      connections.delete(conn);
      metrics.connections.set(connections.size);
      // Codes come from clients too: the label stays bounded to the ones the protocol knows.
      metrics.closed.labels(closeCodeLabel(code)).inc();
      registry.detach(conn);
      life.changed();
    },
    sessionDone: () => life.changed(),
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
        draining,
        connections: () => connections.size,
        sessions: () => registry.activeSessions(),
        cluster,
      });
    },
  );
  http.keepAliveTimeout = 5000;
  // Serving until a drain or close: named states (server/lifecycle.ts), one teardown.
  const life = new ServerLifecycle(connections, cfg.drainMs, async () => {
    registry.clear();
    wss.close();
    http.closeAllConnections();
    await new Promise<void>((r) => http.close(() => r()));
    metrics.stop();
  });

  const settled = capPendingUpgrades(http, cfg, metrics);
  const admission: Admission = {
    cfg,
    metrics,
    wss,
    tokens,
    draining,
    // With several workers, the whole server's count (server/cluster.ts): --max-connections is the server's cap.
    connectionCount: () => connections.size + (cluster?.others() ?? 0),
    admit(ws, route, claim) {
      metrics.opened.inc();
      const conn = new Connection({
        ws,
        id: registry.nextConnectionId(),
        host,
        pathDevice: route.deviceId === null ? null : { id: route.deviceId, resume: route.resume },
        claim,
        xiaozhi: route.xiaozhi ?? null,
      });
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
    // A fleet reconnecting after a restart arrives in one burst: Node's default accept queue of 511 overflowed at
    // 20,000 devices (connects refused, retried, storming longer). The kernel caps it at net.core.somaxconn.
    http.listen({ port: cfg.port, host: cfg.host, backlog: ACCEPT_BACKLOG }, () => {
      http.off('error', onError);
      resolve();
    });
  });
  http.on('error', (e) => log(`http: ${e.message}`));
  const port = (http.address() as AddressInfo).port;
  const hostForUrl = cfg.host.includes(':') ? `[${cfg.host}]` : cfg.host;

  const server: VoiceServer = {
    config: cfg,
    port,
    httpUrl: `http://${hostForUrl}:${port}`,
    wsUrl: `ws://${hostForUrl}:${port}`,
    metrics,
    connectionCount: () => connections.size,
    drain: () => life.drain(),
    close: () => life.close(),
    forceClose: () => life.forceClose(),
    worker: {
      release: (d) => registry.release(d),
      health: () => ({ connections: connections.size, sessions: registry.activeSessions(), draining: draining() }),
      connections: () => connections.size,
      metrics: () => metrics.registry.getMetricsAsJSON(),
      drain: () => life.drain(),
      forceClose: () => life.forceClose(),
    },
  };
  return server;
}
