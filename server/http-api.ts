// The server's HTTP face: GET /health (status, connections, sessions, draining) and GET /metrics (Prometheus text);
// off loopback with tokens configured, both ask for a token too. POST /xiaozhi/ota/ is the xiaozhi firmware's first
// call (its OTA check): it answers where the WebSocket is and the token to use, as xiaozhi servers do.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { bearerOf } from './admission.ts';
import type { ClusterLink } from './cluster.ts';
import type { ServerMetrics } from './metrics.ts';

export interface HttpApiState {
  metrics: ServerMetrics;
  tokens: Map<string, RegExp | null>;
  httpNeedsToken: boolean;
  /** When the server started (ms since the epoch). */
  started: number;
  draining(): boolean;
  connections(): number;
  sessions(): number;
  /** Set in a worker of several: /health and /metrics answer for every worker. */
  cluster?: ClusterLink;
}

export function httpApi(req: IncomingMessage, res: ServerResponse, st: HttpApiState): void {
  const [path, query] = (req.url ?? '/').split('?') as [string, string | undefined];
  if (st.httpNeedsToken && (path === '/health' || path === '/metrics')) {
    const given = bearerOf(req, new URLSearchParams(query ?? '').get('token') ?? undefined);
    if (!given || !st.tokens.has(given)) {
      res.writeHead(401, { 'content-type': 'text/plain' }).end('Unauthorized');
      return;
    }
  }
  if (req.method === 'GET' && path === '/health') {
    const own = { connections: st.connections(), sessions: st.sessions(), draining: st.draining() };
    void (st.cluster ? st.cluster.health() : Promise.resolve(own)).then((h) => {
      const body = JSON.stringify({
        status: h.draining ? 'draining' : 'ok',
        ...h,
        uptime_s: Math.round((Date.now() - st.started) / 1000),
      });
      res.writeHead(h.draining ? 503 : 200, { 'content-type': 'application/json' }).end(body);
    });
  } else if (req.method === 'POST' && path === '/xiaozhi/ota/') {
    ota(req, res, st);
  } else if (req.method === 'GET' && path === '/metrics') {
    (st.cluster ? st.cluster.metrics() : st.metrics.registry.metrics()).then(
      (text) => res.writeHead(200, { 'content-type': st.metrics.registry.contentType }).end(text),
      () => res.writeHead(500).end(),
    );
  } else {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
  }
}

/** Bytes an OTA request body may hold (a firmware's system-info JSON is under 2 KiB). */
const OTA_BODY_MAX = 16 * 1024;

/**
 * xiaozhi's OTA check: a POST with the device's Device-Id (its MAC) and Client-Id, a JSON body of system info; the
 * answer carries the server's time, the firmware it offers (none newer), and `websocket` {url, token}: this server's
 * xiaozhi path on the host the device asked, and the token it accepts (its first exact one; none configured: empty).
 */
function ota(req: IncomingMessage, res: ServerResponse, st: HttpApiState): void {
  const fail = (status: number, text: string) =>
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ error: text }));
  let size = 0;
  let body = '';
  req.setEncoding('utf8');
  req.on('data', (c: string) => {
    size += c.length;
    if (size <= OTA_BODY_MAX) body += c;
  });
  req.on('end', () => {
    if (size > OTA_BODY_MAX) return fail(413, 'body too large');
    const deviceId = req.headers['device-id'];
    if (typeof deviceId !== 'string' || !deviceId) return fail(400, 'Device-Id header is required');
    try {
      const info = JSON.parse(body || '{}') as unknown;
      if (info === null || typeof info !== 'object' || Array.isArray(info))
        return fail(400, 'body must be a JSON object');
    } catch {
      return fail(400, 'body is not JSON');
    }
    st.metrics.otaRequests.inc();
    const token = [...st.tokens].find(([, pattern]) => pattern === null)?.[0] ?? '';
    const host = req.headers.host ?? '127.0.0.1';
    res.writeHead(200, { 'content-type': 'application/json' }).end(
      JSON.stringify({
        server_time: { timestamp: Date.now(), timezone_offset: 0 },
        firmware: { version: '0.0.0', url: '' },
        websocket: { url: `ws://${host}/xiaozhi/v1/`, token },
      }),
    );
  });
}
