// The CLI's own HTTP calls around a run (k6's REST API, the server's /health and /metrics, Toxiproxy's API, a user's
// --server-metrics), on node:http rather than the global fetch. Node's fetch is undici: its first call loads it, and
// its WebAssembly HTTP parser, for the rest of the process. Measured beside a 10,000-device run (2026-12-07): the CLI
// 75 MiB of RSS and 0.65% of a core with fetch, 61 MiB and 0.35% without. These calls need nothing undici adds.
import http from 'node:http';
import https from 'node:https';

export interface HttpInit {
  method?: string;
  body?: string | null;
  headers?: Record<string, string>;
  /** Ends the call (it rejects), e.g. AbortSignal.timeout(ms). */
  signal?: AbortSignal;
  /** An answer longer than this many bytes is cut off: its text is null (default 16 MiB). */
  maxBytes?: number;
}

export interface HttpAnswer {
  ok: boolean;
  status: number;
  /** The whole body as UTF-8; null when it was longer than maxBytes. */
  text: string | null;
}

/** An error of the call itself (no answer): its code (ECONNREFUSED, ABORT_ERR…) or message. */
export function callErrorCode(e: unknown): string {
  const err = e as NodeJS.ErrnoException & { cause?: { name?: string } };
  return err.cause?.name === 'TimeoutError' ? 'no answer in time' : (err.code ?? err.message);
}

/** One request; resolves to the answer (any status), rejects when none came (refused, reset, aborted). */
export function httpCall(url: string, init: HttpInit = {}): Promise<HttpAnswer> {
  const max = init.maxBytes ?? 16 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    const body = init.body ?? null;
    const headers = {
      ...init.headers,
      ...(body !== null ? { 'Content-Length': String(Buffer.byteLength(body)) } : {}),
    };
    const req = (url.startsWith('https:') ? https : http).request(
      url,
      // A connection per call (no keep-alive pool): a pooled socket to a process that has since restarted on the same
      // port (Toxiproxy, the server, between runs) would fail the next call with a reset.
      { method: init.method ?? 'GET', headers, signal: init.signal, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        let n = 0;
        let over = false;
        res.on('data', (c: Buffer) => {
          n += c.byteLength;
          if (n > max) {
            over = true;
            res.destroy();
            const status = res.statusCode ?? 0;
            resolve({ ok: status >= 200 && status < 300, status, text: null });
          } else chunks.push(c);
        });
        res.on('error', (e) => !over && reject(e));
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          resolve({ ok: status >= 200 && status < 300, status, text: Buffer.concat(chunks).toString('utf8') });
        });
      },
    );
    req.on('error', reject);
    if (body !== null) req.write(body);
    req.end();
  });
}

/** A call whose answer is JSON, parsed; rejects when no answer came or it is not JSON. */
export async function httpJson<T>(url: string, init: HttpInit = {}): Promise<{ ok: boolean; status: number; json: T }> {
  const r = await httpCall(url, init);
  return { ok: r.ok, status: r.status, json: JSON.parse(r.text ?? '') as T };
}

/** A body parsed as JSON, or the fallback when it is none (null, empty, not JSON). */
export function jsonOr<T>(text: string | null, fallback: T): T {
  try {
    return JSON.parse(text ?? '') as T;
  } catch {
    return fallback;
  }
}
