// One real upgrade before any load: the dialect's connect (its path, query and headers, the run's credentials) made
// once against --server-url, as a device of the fleet would make it (core/device-env.ts connectRequest). A server that
// refuses it with 401, 403 or 404 refuses every device: the run would measure nothing but the refusal, so the command
// stops in one line naming the HTTP status. The token never appears in what it prints.
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { connectRequest, deviceVars, provisionRequest } from '../core/device-env.ts';
import { capture, DEFAULT_DIALECT, type Dialect, type Provision, type Vars } from '../core/dialect.ts';
import { WakestormError } from '../core/errors.ts';
import { parseProfileMix, PROFILES, type Profile } from '../core/profiles.ts';
import { nodeDialect } from './node-devices.ts';
import { wsTlsOptions, type TlsTrust } from './tls-trust.ts';

/** Statuses that refuse every device alike: wrong credentials, or a path the server does not serve. */
const REFUSING = new Set([401, 403, 404]);

class PreflightError extends WakestormError {
  constructor(message: string) {
    super(message, 2);
  }

  override name = 'PreflightError';
}

/** Hides the token wherever it appears in a line (the URL's path or query, a header). */
export function redactToken(line: string, token: string | undefined): string {
  if (!token) return line;
  let out = line.split(token).join('…');
  const enc = encodeURIComponent(token);
  if (enc !== token) out = out.split(enc).join('…');
  return out;
}

/** What one upgrade got: open, or refused with an HTTP status and the first line of the body, or no answer. */
export type UpgradeResult =
  | { kind: 'open' }
  | { kind: 'refused'; status: number; reason: string; body: string }
  | { kind: 'failed'; why: string };

/** Node's codes for a certificate it did not accept (tls.checkServerIdentity and OpenSSL's verify results). */
const CERT_REFUSED = /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)|ALTNAME|HOSTNAME/;

/** One upgrade to `url` with `headers`, closed at once if it opens; bounded by `timeoutMs`. */
function upgradeOnce(
  url: string,
  headers: Record<string, string>,
  tls: TlsTrust = {},
  timeoutMs = 5000,
): Promise<UpgradeResult> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, {
      headers,
      handshakeTimeout: timeoutMs,
      ...wsTlsOptions(tls),
    });
    let done = false;
    const finish = (r: UpgradeResult) => {
      if (done) return;
      done = true;
      resolve(r);
    };
    ws.on('open', () => {
      finish({ kind: 'open' });
      ws.close(1000);
    });
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        if (body.length < 512) body += c;
      });
      const end = () => {
        finish({
          kind: 'refused',
          status: res.statusCode ?? 0,
          reason: res.statusMessage ?? '',
          body: (body.split('\n')[0] ?? '').trim().slice(0, 120),
        });
        ws.terminate();
      };
      res.on('end', end);
      res.on('error', end);
      setTimeout(end, 1000).unref();
    });
    ws.on('error', (e) => finish({ kind: 'failed', why: (e as NodeJS.ErrnoException).code ?? e.message }));
  });
}

/** The profile and dialect the fleet's first device would use: --profile's first entry and --dialect, or defaults. */
function deviceOf(
  profileSpec: string | undefined,
  dialectSpec: string | undefined,
): { profile: Profile; dialect: Dialect } {
  const profile = profileSpec
    ? parseProfileMix(profileSpec, (p) => readFileSync(p, 'utf8'))[0]!.profile
    : PROFILES.recommended!;
  const dialect = nodeDialect(dialectSpec ?? profile.dialect ?? DEFAULT_DIALECT);
  return { profile, dialect };
}

/**
 * Makes the fleet's upgrade once against `serverUrl`. Resolves when it opens (or the server answers something that
 * does not refuse every device); throws a PreflightError (exit 2) naming the status when it is 401, 403 or 404.
 */
export async function preflightUpgrade(o: {
  serverUrl: string;
  profile?: string;
  dialect?: string;
  token?: string;
  tls?: TlsTrust;
  /** The provision call's base (--provision-url); none: the server over http. */
  provisionUrl?: string;
}): Promise<UpgradeResult> {
  const { profile, dialect } = deviceOf(o.profile, o.dialect);
  const vars = deviceVars('preflight-0', profile, dialect);
  if (dialect.variables.includes('token')) vars.token = o.token;
  const base = o.serverUrl.replace(/\/+$/, '');
  // A dialect whose firmware checks in over HTTP first (xiaozhi's OTA): that call, as the device makes it.
  if (dialect.provision)
    await provisionOnce(dialect.provision, vars, o.provisionUrl ?? base.replace(/^ws/, 'http'), o.token);
  const { url, headers } = connectRequest(dialect, profile, vars, base);
  const r = await upgradeOnce(url, headers, o.tls);
  if (r.kind === 'failed' && CERT_REFUSED.test(r.why))
    throw new PreflightError(
      `the server's TLS certificate was not accepted (${r.why}): pass --ca FILE with the CA that signed it, or --insecure-tls to skip verification; nothing was run`,
    );
  if (r.kind === 'refused' && REFUSING.has(r.status)) {
    const what = r.status === 404 ? "the dialect's connect.path" : "--token / --token-file and the dialect's connect";
    throw new PreflightError(
      redactToken(
        `the server refused the upgrade with HTTP ${r.status}${r.reason ? ` ${r.reason}` : ''}` +
          `${r.body ? ` (${r.body})` : ''} for ${url}: check ${what}; nothing was run`,
        o.token,
      ),
    );
  }
  return r;
}

/**
 * The dialect's provision call once, as a device makes it (core/device-link.ts provision): its answer's captures go
 * into vars for the upgrade. A refusal (4xx, 5xx) or no answer stops the command in one line naming it.
 */
async function provisionOnce(pv: Provision, vars: Vars, base: string, token: string | undefined): Promise<void> {
  const { url, headers, body } = provisionRequest(pv, vars, base);
  let res: Response;
  try {
    res = await fetch(url, {
      method: pv.method,
      headers,
      body,
      signal: AbortSignal.timeout(5000),
    });
  } catch (e) {
    throw new PreflightError(
      redactToken(
        `the dialect's provision call ${pv.method} ${url} got no answer (${(e as Error).message}); nothing was run`,
        token,
      ),
    );
  }
  const text = (await res.text()).slice(0, 4096);
  let answer: unknown = null;
  try {
    answer = JSON.parse(text);
  } catch {
    answer = null;
  }
  if (!res.ok || answer === null || typeof answer !== 'object' || Array.isArray(answer))
    throw new PreflightError(
      redactToken(
        `the dialect's provision call ${pv.method} ${url} answered ${res.ok ? 'with no JSON object' : `HTTP ${res.status}`}` +
          `${text ? ` (${(text.split('\n')[0] ?? '').trim().slice(0, 120)})` : ''}: check --provision-url and the server's provisioning; nothing was run`,
        token,
      ),
    );
  capture(pv.capture, answer, vars);
}
