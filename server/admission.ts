// Who may open a link: the upgrade path (/ws, /ws/{id}, or a xiaozhi channel on /xiaozhi/v1/), the bearer token and the ids it may claim, the drain, the
// connection cap, and the cap on sockets that have not upgraded yet. A refusal is an HTTP status or a close code from
// docs/protocol.md, never a crash.
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { WebSocket, WebSocketServer } from 'ws';
import { CLOSE, DEVICE_ID_PATTERN } from '../core/protocol.ts';
import type { ServerConfig } from './config.ts';
import type { XiaozhiChannel } from './connection.ts';
import { framingFor } from './xiaozhi.ts';
import type { ServerMetrics } from './metrics.ts';

/** The bearer token of a request: `Authorization: Bearer …` or `?token=`. */
export function bearerOf(req: IncomingMessage, queryToken: string | undefined): string | undefined {
  const auth = req.headers.authorization;
  return (auth && /^Bearer\s+(\S+)$/i.exec(auth)?.[1]) || queryToken;
}

function rejectUpgrade(socket: Duplex, status: number, text: string): void {
  socket.end(
    `HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${text.length}\r\n\r\n${text}`,
  );
  setTimeout(() => socket.destroy(), 1000).unref();
}

/** A xiaozhi-esp32 device id: its MAC address (Device-Id header), or any short id of the same characters. */
const XIAOZHI_DEVICE_ID = /^[A-Za-z0-9:._-]{1,64}$/;

export interface Route {
  deviceId: string | null;
  resume?: string;
  token?: string;
  /** /xiaozhi/v1/: the channel speaks xiaozhi-esp32's dialect. */
  xiaozhi?: XiaozhiChannel;
}

/**
 * Parses the upgrade: /ws → hello-identified, /ws/{id} → path-identified, /xiaozhi/v1/ → a xiaozhi channel (the device
 * id from the Device-Id header, the binary framing from Protocol-Version); anything else → null.
 */
export function routeUpgrade(url: string, headers: IncomingMessage['headers'] = {}): Route | null {
  let u: URL;
  try {
    u = new URL(url, 'http://x');
  } catch {
    return null;
  }
  const token = u.searchParams.get('token') ?? undefined;
  if (u.pathname === '/ws' || u.pathname === '/ws/') return { deviceId: null, token };
  if (u.pathname === '/xiaozhi/v1' || u.pathname === '/xiaozhi/v1/') {
    const id = headers['device-id'];
    const framing = framingFor(
      typeof headers['protocol-version'] === 'string' ? headers['protocol-version'] : undefined,
    );
    if (typeof id !== 'string' || !XIAOZHI_DEVICE_ID.test(id) || !framing) return null;
    return { deviceId: id, token, xiaozhi: { deviceId: id, framing } };
  }
  const m = /^\/ws\/([^/]+)$/.exec(u.pathname);
  if (!m) return null;
  let id: string;
  try {
    id = decodeURIComponent(m[1]!);
  } catch {
    return null;
  }
  if (!DEVICE_ID_PATTERN.test(id)) return null;
  return { deviceId: id, resume: u.searchParams.get('resume') ?? undefined, token };
}

/** Caps the sockets that have not upgraded (or sent a request) yet: past maxPendingUpgrades, refused at once. */
export function capPendingUpgrades(http: Server, cfg: ServerConfig, metrics: ServerMetrics): (sock: unknown) => void {
  const pending = new Set<unknown>();
  http.on('connection', (sock) => {
    if (pending.size >= cfg.maxPendingUpgrades) {
      metrics.rejected.labels('too_many_pending').inc();
      sock.destroy();
      return;
    }
    pending.add(sock);
    sock.once('close', () => pending.delete(sock));
  });
  // A socket that got as far as a request or an upgrade is no longer pending.
  return (sock) => pending.delete(sock);
}

export interface Admission {
  cfg: ServerConfig;
  metrics: ServerMetrics;
  wss: WebSocketServer;
  /** Token → the device ids it may claim (null: any). Empty: no auth. */
  tokens: Map<string, RegExp | null>;
  draining(): boolean;
  connectionCount(): number;
  /** An admitted socket, with its route and the ids its token may claim. */
  admit(ws: WebSocket, route: Route, claim: RegExp | null): void;
}

/** Routes one upgrade request: refused with an HTTP status, closed with 1013 past maxConnections, or admitted. */
export function handleUpgrade(a: Admission, req: IncomingMessage, socket: Duplex, head: Buffer): void {
  socket.on('error', () => {});
  const route = routeUpgrade(req.url ?? '/', req.headers);
  if (!route) {
    a.metrics.rejected.labels('not_found').inc();
    return rejectUpgrade(socket, 404, 'Not Found');
  }
  let claim: RegExp | null = null;
  if (a.tokens.size > 0) {
    const given = bearerOf(req, route.token);
    if (!given || !a.tokens.has(given)) {
      a.metrics.rejected.labels('unauthorized').inc();
      return rejectUpgrade(socket, 401, 'Unauthorized');
    }
    // A bound token can only open, and so replace (4409), its own ids.
    claim = a.tokens.get(given) ?? null;
    if (claim && route.deviceId !== null && !claim.test(route.deviceId)) {
      a.metrics.rejected.labels('forbidden').inc();
      return rejectUpgrade(socket, 403, 'Forbidden');
    }
  }
  if (a.draining()) {
    a.metrics.rejected.labels('draining').inc();
    return rejectUpgrade(socket, 503, 'Service Unavailable');
  }
  a.wss.handleUpgrade(req, socket, head, (ws) => {
    if (a.connectionCount() >= a.cfg.maxConnections) {
      a.metrics.rejected.labels('max_connections').inc();
      a.metrics.closed.labels(String(CLOSE.TRY_AGAIN_LATER)).inc();
      ws.close(CLOSE.TRY_AGAIN_LATER, 'try again later');
      setTimeout(() => ws.terminate(), 2000).unref();
      return;
    }
    a.admit(ws, route, claim);
  });
}
