// The proxy layout (scripts/proxies.json), validated: which Toxiproxy proxies sit between devices and server.
import { readFileSync } from 'node:fs';

export interface ProxySpec {
  name: string;
  /** Device-facing port on 127.0.0.1. */
  listen_port: number;
  /** 'server' (the stack's target) or an explicit host:port. */
  upstream: string;
}

export function loadProxyLayout(path = new URL('./proxies.json', import.meta.url)): ProxySpec[] {
  const raw = JSON.parse(readFileSync(path, 'utf8')) as { proxies?: unknown };
  if (!Array.isArray(raw.proxies) || raw.proxies.length === 0)
    throw new Error('scripts/proxies.json: "proxies" must be a non-empty list');
  return raw.proxies.map((p: Record<string, unknown>, i: number) => {
    if (typeof p.name !== 'string' || !/^[a-z][a-z0-9_-]*$/.test(p.name))
      throw new Error(`scripts/proxies.json: proxies[${i}].name must be a lowercase name`);
    if (!Number.isInteger(p.listen_port) || (p.listen_port as number) < 1 || (p.listen_port as number) > 65535)
      throw new Error(`scripts/proxies.json: proxies[${i}].listen_port must be a port`);
    if (typeof p.upstream !== 'string')
      throw new Error(`scripts/proxies.json: proxies[${i}].upstream must be 'server' or host:port`);
    return { name: p.name, listen_port: p.listen_port as number, upstream: p.upstream };
  });
}
