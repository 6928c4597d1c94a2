// The server's HTTP face: GET /health (status, connections, sessions, draining) and GET /metrics (Prometheus text).
// Off loopback with tokens configured, both ask for a token too.
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
  } else if (req.method === 'GET' && path === '/metrics') {
    (st.cluster ? st.cluster.metrics() : st.metrics.registry.metrics()).then(
      (text) => res.writeHead(200, { 'content-type': st.metrics.registry.contentType }).end(text),
      () => res.writeHead(500).end(),
    );
  } else {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
  }
}
