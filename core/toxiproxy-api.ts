// The one Toxiproxy path: every request wakestorm makes to Toxiproxy (and to the stack's control API) is built here,
// as data. k6's chaos VU carries them out with k6/http (scenarios/lib/chaos.ts), the CLI with Node's fetch
// (scripts/toxiproxy.ts); both report a failure with apiError, which keeps Toxiproxy's own error text.
import type { FaultAction } from './faults.ts';

export interface ApiRequest {
  /** Who answers: Toxiproxy's API or the stack's control API; named in errors. */
  service: 'Toxiproxy' | 'control API';
  method: 'GET' | 'POST' | 'DELETE';
  /** The service's base URL (http://127.0.0.1:8474) and the path under it. */
  base: string;
  path: string;
  /** JSON text, or null for no body. */
  body: string | null;
  /** How long the caller waits for the answer, s (default 5): a server start waits for a drain to finish first. */
  timeoutS?: number;
}

export interface ToxicSpec {
  name: string;
  type: string;
  stream: 'upstream' | 'downstream';
  toxicity: number;
  attributes: Record<string, number>;
}

export interface ProxyInfo {
  name: string;
  listen: string;
  upstream: string;
  enabled: boolean;
}

export const requestUrl = (r: ApiRequest): string => r.base + r.path;

const enc = encodeURIComponent;
const tp = (method: ApiRequest['method'], base: string, path: string, body?: unknown): ApiRequest => ({
  service: 'Toxiproxy',
  method,
  base,
  path,
  body: body === undefined ? null : JSON.stringify(body),
});

/** Toxiproxy's HTTP API (https://github.com/Shopify/toxiproxy#http-api), as far as wakestorm uses it. */
export const toxiproxyApi = {
  version: (base: string) => tp('GET', base, '/version'),
  /** GET /proxies answers { name: ProxyInfo }. */
  proxies: (base: string) => tp('GET', base, '/proxies'),
  createProxy: (base: string, p: { name: string; listen: string; upstream: string }) =>
    tp('POST', base, '/proxies', { ...p, enabled: true }),
  deleteProxy: (base: string, proxy: string) => tp('DELETE', base, `/proxies/${enc(proxy)}`),
  /** A disabled proxy closes its open links and refuses new ones: the `cut` link action. */
  setEnabled: (base: string, proxy: string, enabled: boolean) =>
    tp('POST', base, `/proxies/${enc(proxy)}`, { enabled }),
  toxics: (base: string, proxy: string) => tp('GET', base, `/proxies/${enc(proxy)}/toxics`),
  addToxic: (base: string, proxy: string, t: ToxicSpec) => tp('POST', base, `/proxies/${enc(proxy)}/toxics`, t),
  removeToxic: (base: string, proxy: string, name: string) =>
    tp('DELETE', base, `/proxies/${enc(proxy)}/toxics/${enc(name)}`),
  /** Every toxic removed, every proxy enabled. */
  reset: (base: string) => tp('POST', base, '/reset'),
};

/**
 * The stack's control API: the reference server stopped (drained with 1012) and started again. A stop answers as
 * soon as the drain has begun (the fault's onset); a start answers when the server is healthy again, after the drain
 * finished, which may take the server's drain time (5 s by default) and its start-up: hence the longer wait.
 */
export const controlApi = {
  serverStop: (base: string): ApiRequest => ({
    service: 'control API',
    method: 'POST',
    base,
    path: '/server/stop',
    body: '{}',
  }),
  serverStart: (base: string): ApiRequest => ({
    service: 'control API',
    method: 'POST',
    base,
    path: '/server/start',
    body: '{}',
    timeoutS: 60,
  }),
};

export interface ActionTarget {
  toxiproxyUrl: string;
  /** The stack's control API; '' when the stack does not own the server. */
  controlUrl: string;
  proxy: string;
  /** The name a toxic action's toxic carries on this proxy (so its end can remove it). */
  toxicName(a: Extract<FaultAction, { kind: 'toxic' }>): string;
}

/** The request that starts (onset) or undoes (end) one fault action on one Toxiproxy, or why there is none. */
export function actionRequest(a: FaultAction, phase: 'onset' | 'end', t: ActionTarget): ApiRequest | { error: string } {
  switch (a.kind) {
    case 'toxic': {
      const name = t.toxicName(a);
      return phase === 'onset'
        ? toxiproxyApi.addToxic(t.toxiproxyUrl, t.proxy, {
            name,
            type: a.type,
            stream: a.stream,
            toxicity: a.toxicity,
            attributes: a.attributes,
          })
        : toxiproxyApi.removeToxic(t.toxiproxyUrl, t.proxy, name);
    }
    case 'disable-proxy':
      return toxiproxyApi.setEnabled(t.toxiproxyUrl, t.proxy, phase === 'end');
    case 'server-restart':
      if (!t.controlUrl)
        return {
          error:
            'server-restart needs CONTROL_URL (the stack owns the server): run under `wakestorm stack` or `wakestorm run`',
        };
      return phase === 'onset' ? controlApi.serverStop(t.controlUrl) : controlApi.serverStart(t.controlUrl);
  }
}

/**
 * One line for a failed request, with the service's own message: `Toxiproxy: POST /proxies/voice/toxics -> 409:
 * toxic already exists`. Toxiproxy answers errors as {"error": "…", "status": n}; anything else is shown as text.
 */
export function apiError(r: ApiRequest, status: number | string, body: string): string {
  let msg = body.trim();
  try {
    const parsed = JSON.parse(msg) as { error?: unknown };
    if (typeof parsed.error === 'string') msg = parsed.error;
  } catch {
    /* plain text */
  }
  return `${r.service}: ${r.method} ${r.path} -> ${status}${msg ? `: ${msg.slice(0, 200)}` : ''}`;
}

/** One line for a service that did not answer at all. */
export function unreachable(r: ApiRequest, cause: string): string {
  return r.service === 'Toxiproxy'
    ? `Toxiproxy is not reachable at ${r.base} (${cause}): start it with 'wakestorm stack' or set TOXIPROXY_URL`
    : `the stack's control API is not reachable at ${r.base} (${cause})`;
}
