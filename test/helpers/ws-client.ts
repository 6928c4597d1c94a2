// A real `ws` test client that queues what the server sends, so tests can await the next message of a type.
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import type { ServerMessage } from '../../core/protocol.ts';

export const UTTERANCE = readFileSync(new URL('../../audio/utterance.pcm', import.meta.url));

export class TestClient {
  readonly ws: WebSocket;
  readonly messages: ServerMessage[] = [];
  binaryBytes = 0;
  binaryFrames = 0;
  closeCode: number | null = null;
  closeReason = '';
  readonly opened: Promise<void>;
  readonly closed: Promise<number>;
  private waiters: (() => void)[] = [];

  constructor(url: string, opts: WebSocket.ClientOptions = {}) {
    this.ws = new WebSocket(url, opts);
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      this.ws.once('error', reject);
    });
    this.opened.catch(() => {});
    this.closed = new Promise((resolve) => {
      this.ws.on('close', (code, reason) => {
        this.closeCode = code;
        this.closeReason = reason.toString();
        this.wake();
        resolve(code);
      });
    });
    this.ws.on('error', () => {});
    this.ws.on('message', (data, isBinary) => {
      if (isBinary) {
        this.binaryBytes += (data as Buffer).length;
        this.binaryFrames++;
      } else this.messages.push(JSON.parse(data.toString()) as ServerMessage);
      this.wake();
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  send(msg: object): void {
    this.ws.send(JSON.stringify(msg));
  }

  /** Waits for (and removes from the queue) the first message of this type. */
  async next<T extends ServerMessage['type']>(type: T, timeoutMs = 3000): Promise<Extract<ServerMessage, { type: T }>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.messages.findIndex((m) => m.type === type);
      if (i >= 0) return this.messages.splice(i, 1)[0] as Extract<ServerMessage, { type: T }>;
      if (this.closeCode !== null) throw new Error(`closed (${this.closeCode}) while waiting for ${type}; have ${this.messages.map((m) => m.type).join(',')}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timeout waiting for ${type}; have ${this.messages.map((m) => m.type).join(',')}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  async waitClose(timeoutMs = 3000): Promise<number> {
    return Promise.race([this.closed, new Promise<number>((_, rej) => setTimeout(() => rej(new Error('timeout waiting for close')), timeoutMs))]);
  }

  /** Streams PCM in frames, as fast as allowed by the server's audio burst (tests don't need real time). */
  sendAudio(pcm: Buffer, frame = 640): void {
    for (let i = 0; i + frame <= pcm.length; i += frame) this.ws.send(pcm.subarray(i, i + frame));
  }

  close(): void {
    this.ws.terminate();
  }
}

/** Opens a path-identified device and waits for `connected`. */
export async function connectDevice(base: string, id: string, query = '', opts: WebSocket.ClientOptions = {}) {
  const c = new TestClient(`${base}/ws/${id}${query}`, opts);
  await c.opened;
  const connected = await c.next('connected');
  return { c, connected };
}

/** Fetches the HTTP status an upgrade attempt gets, or 101. */
export function upgradeStatus(url: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { headers });
    ws.on('open', () => {
      ws.terminate();
      resolve(101);
    });
    ws.on('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.on('error', () => resolve(0));
  });
}

export function metricValue(text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
  return line ? Number(line.split(' ').pop()) : NaN;
}
