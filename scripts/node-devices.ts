// Runs the device model on Node: `ws` sockets shaped like k6's browser-like WebSocket, the real clock, a metrics recorder.
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { makeAudioFrames } from '../core/audio-frames.ts';
import type { AudioFrames, DeviceEnv, SocketLike } from '../core/device-env.ts';
import type { OpusTable } from '../core/opus.ts';
import { loadDialect, type Dialect } from '../core/dialect.ts';
import type { DeviceMetricName, MetricSink } from '../core/metric-names.ts';
import { deviceRandom } from '../core/rng.ts';
import { wsTlsOptions, type TlsTrust } from './tls-trust.ts';

/** Wraps a `ws` client in the onopen/onmessage/onclose shape the device expects. */
export function wsSocket(url: string, headers: Record<string, string>, tls: TlsTrust = {}): SocketLike {
  const ws = new WebSocket(url, { headers, ...wsTlsOptions(tls) });
  const s: SocketLike = {
    get readyState() {
      return ws.readyState;
    },
    // ws fails an upgrade whose subprotocol disagrees with the request itself (RFC 6455 §4.1), as an error.
    get protocol() {
      return ws.protocol;
    },
    binaryType: 'arraybuffer',
    onopen: null,
    onmessage: null,
    onclose: null,
    onerror: null,
    send: (data) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(data as Buffer);
    },
    ping: () => {
      if (ws.readyState === WebSocket.OPEN) ws.ping();
    },
    close: (code, reason) => {
      if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
      else if (ws.readyState === WebSocket.OPEN) ws.close(code, reason);
    },
  };
  ws.on('open', () => s.onopen?.());
  ws.on('message', (data: Buffer, isBinary) => {
    if (isBinary) s.onmessage?.({ data: data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) });
    else s.onmessage?.({ data: data.toString('utf8') });
  });
  ws.on('error', (e) => s.onerror?.({ error: e.message }));
  ws.on('close', (code) => s.onclose?.({ code }));
  return s;
}

/** Collects every metric sample, for assertions and summaries. */
export class MetricsRecorder implements MetricSink {
  readonly samples: { name: DeviceMetricName; value: number; tags: Record<string, string> }[] = [];
  add(name: DeviceMetricName, value: number, tags: Record<string, string>): void {
    this.samples.push({ name, value, tags });
  }
  values(name: DeviceMetricName): number[] {
    return this.samples.filter((s) => s.name === name).map((s) => s.value);
  }
  count(name: DeviceMetricName): number {
    return this.values(name).reduce((a, b) => a + b, 0);
  }
  tagsOf(name: DeviceMetricName): Record<string, string>[] {
    return this.samples.filter((s) => s.name === name).map((s) => s.tags);
  }
}

let utterance: AudioFrames | null = null;
export function nodeAudio(): AudioFrames {
  if (!utterance) {
    const ab = (b: Buffer) => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
    const buf = readFileSync(new URL('../audio/utterance.pcm', import.meta.url));
    const bytes = readFileSync(new URL('../audio/utterance.opus', import.meta.url));
    const table = JSON.parse(
      readFileSync(new URL('../audio/utterance.opus.json', import.meta.url), 'utf8'),
    ) as OpusTable;
    utterance = makeAudioFrames(ab(buf), { bytes: ab(bytes), table });
  }
  return utterance;
}

export function nodeDeviceEnv(id: string, metrics: MetricSink, seed = '1', extra: Partial<DeviceEnv> = {}): DeviceEnv {
  return {
    openSocket: (url, headers) => wsSocket(url, headers),
    now: () => Date.now(),
    setTimeout: (fn, ms) => setTimeout(fn, ms),
    clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
    random: deviceRandom(seed, id),
    metrics,
    audio: nodeAudio(),
    request: (req, done) => {
      fetch(req.url, { method: req.method, headers: req.headers, body: req.body, signal: AbortSignal.timeout(10_000) })
        .then(async (r) => done({ status: r.status, body: await r.text() }))
        .catch((e: unknown) => done({ error: (e as Error).message }));
    },
    ...extra,
  };
}

/** A dialect by name or .json path, read from this checkout (Node's side of core/dialect.ts loadDialect). */
export function nodeDialect(spec: string): Dialect {
  return loadDialect(
    spec,
    (p) => readFileSync(p, 'utf8'),
    (p) => readFileSync(new URL(`../${p}`, import.meta.url), 'utf8'),
  );
}
