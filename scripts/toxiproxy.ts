// The CLI's side of the one Toxiproxy path: the requests core/toxiproxy-api.ts builds, carried out with fetch, and
// failures raised with Toxiproxy's own error text.
import { WakestormError } from '../core/errors.ts';
import {
  apiError,
  requestUrl,
  toxiproxyApi,
  unreachable,
  type ApiRequest,
  type ProxyInfo,
  type ToxicSpec,
} from '../core/toxiproxy-api.ts';
import { callErrorCode, httpCall, type HttpAnswer } from './local-http.ts';

class ToxiproxyApiError extends WakestormError {
  constructor(message: string) {
    super(message, 1);
  }

  override name = 'ToxiproxyApiError';
}

/** Sends one request; resolves to the parsed JSON answer (or null for an empty one). */
async function callApi<T = unknown>(r: ApiRequest, timeoutMs = (r.timeoutS ?? 5) * 1000): Promise<T> {
  let res: HttpAnswer;
  try {
    res = await httpCall(requestUrl(r), {
      method: r.method,
      body: r.body,
      headers: r.body === null ? undefined : { 'Content-Type': 'application/json' },
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (e) {
    throw new ToxiproxyApiError(unreachable(r, callErrorCode(e)));
  }
  const text = res.text ?? '';
  if (!res.ok) throw new ToxiproxyApiError(apiError(r, res.status, text));
  return (text ? JSON.parse(text) : null) as T;
}

/** One Toxiproxy process, by its API URL. */
export class ToxiproxyClient {
  constructor(readonly url: string) {}

  proxies(): Promise<Record<string, ProxyInfo>> {
    return callApi(toxiproxyApi.proxies(this.url));
  }

  async createProxy(p: { name: string; listen: string; upstream: string }): Promise<void> {
    await callApi(toxiproxyApi.createProxy(this.url, p));
  }

  async deleteProxy(name: string): Promise<void> {
    await callApi(toxiproxyApi.deleteProxy(this.url, name));
  }

  async setEnabled(proxy: string, enabled: boolean): Promise<void> {
    await callApi(toxiproxyApi.setEnabled(this.url, proxy, enabled));
  }

  async toxics(proxy: string): Promise<ToxicSpec[]> {
    return (await callApi<ToxicSpec[] | null>(toxiproxyApi.toxics(this.url, proxy))) ?? [];
  }

  async addToxic(proxy: string, t: ToxicSpec): Promise<void> {
    await callApi(toxiproxyApi.addToxic(this.url, proxy, t));
  }

  async removeToxic(proxy: string, name: string): Promise<void> {
    await callApi(toxiproxyApi.removeToxic(this.url, proxy, name));
  }

  async reset(): Promise<void> {
    await callApi(toxiproxyApi.reset(this.url));
  }
}
