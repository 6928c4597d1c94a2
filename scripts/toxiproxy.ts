// toxiproxy-node-client with Toxiproxy's own error messages kept (the library drops the response body on errors).
import { WakestormError } from '../core/errors.ts';
import { Toxiproxy } from 'toxiproxy-node-client';

export class ToxiproxyApiError extends WakestormError {
  constructor(message: string) {
    super(message, 1);
  }

  override name = 'ToxiproxyApiError';
}

export function toxiproxyClient(url: string): Toxiproxy {
  const client = new Toxiproxy(url);
  const api = client.api as unknown as { doFetch: (u: string, init: RequestInit) => Promise<Response> };
  api.doFetch = async (u, init) => {
    let res: Response;
    try {
      res = await fetch(u, init);
    } catch (e) {
      const cause = (e as Error & { cause?: { code?: string; message?: string } }).cause;
      throw new ToxiproxyApiError(`Toxiproxy is not reachable at ${url} (${cause?.code ?? cause?.message ?? (e as Error).message}): start it with 'wakestorm stack'`);
    }
    if (!res.ok) {
      const body = (await res.text()).trim();
      let msg = body;
      try {
        msg = (JSON.parse(body) as { error?: string }).error ?? body;
      } catch {
        /* plain text */
      }
      throw new ToxiproxyApiError(`Toxiproxy: ${init.method ?? 'GET'} ${u.replace(url, '')} -> ${res.status}: ${msg}`);
    }
    return res;
  };
  return client;
}
