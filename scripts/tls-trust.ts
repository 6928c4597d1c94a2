// How the run's processes trust a wss:// server: the system's roots, a private CA (--ca FILE: a PEM bundle), or no
// verification at all (--insecure-tls, an explicit opt-in the report shows). k6 and the device engine are Go programs:
// they read the roots from SSL_CERT_FILE (crypto/x509 on Linux), so --ca reaches both the same way; Node's own
// upgrade (preflight) gets the PEM itself.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { WakestormError } from '../core/errors.ts';

/** How a wss:// server is trusted by Node's `ws`: a CA's PEM (--ca), or not verified at all (--insecure-tls). */
export interface TlsTrust {
  ca?: string;
  insecure?: boolean;
}

/** The `ws` client options that say a TlsTrust. */
export function wsTlsOptions(t: TlsTrust): { ca?: string; rejectUnauthorized?: boolean } {
  return { ...(t.ca ? { ca: t.ca } : {}), ...(t.insecure ? { rejectUnauthorized: false } : {}) };
}

class TlsFlagError extends WakestormError {
  constructor(message: string) {
    super(message, 2);
  }

  override name = 'TlsFlagError';
}

export interface RunTls {
  /** For Node's upgrade (preflight). */
  trust: TlsTrust;
  /** For the Go processes (k6, the engine): SSL_CERT_FILE with --ca, else nothing. */
  env: Record<string, string>;
  /** What the results say about verification: 'system roots', 'CA <file>', or 'off (--insecure-tls)'; null for ws://. */
  verification: string | null;
}

/** Reads --ca and --insecure-tls for a target: one line and exit 2 for a file that is no PEM or flags that do not apply. */
export function runTls(o: { serverUrl?: string; ca?: string; insecureTls?: boolean }): RunTls {
  const secure = !!o.serverUrl && /^(wss|https):/i.test(o.serverUrl);
  if ((o.ca || o.insecureTls) && !secure)
    throw new TlsFlagError(
      `${o.ca ? '--ca' : '--insecure-tls'} applies to a wss:// --server-url${o.serverUrl ? `, not ${o.serverUrl}` : ''}`,
    );
  if (o.ca && o.insecureTls) throw new TlsFlagError('--ca and --insecure-tls contradict each other: pass one');
  if (!secure) return { trust: {}, env: {}, verification: null };
  if (o.insecureTls) return { trust: { insecure: true }, env: {}, verification: 'off (--insecure-tls)' };
  if (!o.ca) return { trust: {}, env: {}, verification: 'system roots' };
  const path = resolve(o.ca);
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch (e) {
    throw new TlsFlagError(`--ca ${o.ca}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.test(pem))
    throw new TlsFlagError(`--ca ${o.ca} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  return { trust: { ca: pem }, env: { SSL_CERT_FILE: path }, verification: `CA ${o.ca}` };
}

/**
 * The name a wss:// server's certificate must hold when the devices reach it through Toxiproxy on 127.0.0.1, or
 * undefined when that is the proxy's own address (nothing to tell the devices).
 */
export function tlsServerName(serverUrl: string | undefined): string | undefined {
  if (!serverUrl || !/^(wss|https):/i.test(serverUrl)) return undefined;
  const host = new URL(serverUrl).hostname.replace(/^\[|\]$/g, '');
  return host === '127.0.0.1' ? undefined : host;
}
