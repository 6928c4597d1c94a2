// A voice server with switchable bugs, for tests of the verdict: a man in the middle, written with `ws`, in front of a
// real reference server in this process. Each bug is a fault a real server has shipped with; the reference server
// itself stays correct. Loopback only.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { pcmDurationMs } from '../../core/pcm.ts';
import type { ServerConfig } from '../../server/config.ts';
import { startVoiceServer, type VoiceServer } from '../../server/server.ts';

export type Bug =
  /** Accepts wakes but never sends session_started. */
  | 'no-wake-ack'
  /** Closes with 1011 when a device sends a JSON `ping` (a heartbeat format it does not know). */
  | 'close-on-json-ping'
  /** Sends no keepalive at all: no JSON ping, no ping frame. */
  | 'no-keepalive'
  /** Answers every `refuseEvery`-th upgrade with HTTP 503. */
  | 'refuse-share'
  /** Ignores resume tokens: every reconnect starts from nothing. */
  | 'forget-resume'
  /** Kills every connection (no close frame) a second after `connected`. */
  | 'drop-after-connect'
  /** Holds the reply (tts_stream_start and everything after it) back by `slowReplyMs`. */
  | 'slow-reply'
  /** Never hears the device's `cancel`: after a barge-in the reply plays on to its end. */
  | 'ignore-abort'
  /** Streams the reply's audio at two thirds of real time (a TTS slower than playback): the user hears it stutter. */
  | 'stutter-reply'
  /** Sends the first half of each reply's audio and then its end, announcing the whole length: the answer is cut. */
  | 'short-reply'
  /** Calls the reply's start `audio_stream_start` (a protocol the dialect does not speak). */
  | 'rename-reply-start'
  /** After losing most of its connections at once (a cut), refuses every upgrade with 503 for `downAfterLossMs`. */
  | 'no-recovery'
  /**
   * Answers the wake word itself (as a server that takes xiaozhi's `listen detect` text for a user turn): a short reply
   * right after session_started, while the user is still speaking; the real reply follows later.
   */
  | 'early-reply';

export const BUGS: Bug[] = [
  'no-wake-ack',
  'close-on-json-ping',
  'no-keepalive',
  'refuse-share',
  'forget-resume',
  'drop-after-connect',
  'slow-reply',
  'ignore-abort',
  'stutter-reply',
  'short-reply',
  'rename-reply-start',
  'no-recovery',
  'early-reply',
];

/** How much slower than real time stutter-reply streams the reply's audio. */
const STUTTER_SLOWDOWN = 1.5;

export interface BuggyOptions {
  bugs?: Bug[];
  /** Flags of the reference server behind. */
  upstream?: Partial<ServerConfig>;
  refuseEvery?: number;
  slowReplyMs?: number;
  /** no-recovery: how long the server stays down after a mass loss (default 30 s). */
  downAfterLossMs?: number;
}

export interface BuggyServer {
  /** ws://127.0.0.1:port: what --server-url takes. */
  url: string;
  upstream: VoiceServer;
  close(): Promise<void>;
}

function textOf(data: RawData): string {
  return Array.isArray(data) ? Buffer.concat(data).toString() : Buffer.from(data as Buffer).toString();
}

function typeOf(text: string): { type?: string; [k: string]: unknown } | null {
  try {
    const v = JSON.parse(text);
    return v && typeof v === 'object' ? v : null;
  } catch {
    return null;
  }
}

/** A code a server may send in a close frame (1005 and 1006 may not be sent). */
function sendable(code: number): boolean {
  return (
    (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999)
  );
}

export async function startBuggyServer(opts: BuggyOptions = {}): Promise<BuggyServer> {
  const bugs = new Set(opts.bugs ?? []);
  const upstream = await startVoiceServer({ port: 0, ...opts.upstream });
  const upHttp = upstream.wsUrl.replace(/^ws/, 'http');
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  const sockets = new Set<WebSocket>();
  let upgrades = 0;
  // no-recovery: recent client closes, and until when the server refuses everyone.
  const closes: number[] = [];
  let downUntil = 0;
  const lost = () => {
    const now = Date.now();
    closes.push(now);
    while (closes.length && closes[0]! < now - 2000) closes.shift();
    // Half of the fleet (at least 4) gone within 2 s: a cut, as a server sees one.
    if (bugs.has('no-recovery') && closes.length >= Math.max(4, (sockets.size + closes.length) / 4) && downUntil < now)
      downUntil = now + (opts.downAfterLossMs ?? 30_000);
  };

  const http: Server = createServer((req, res) => void proxyHttp(req, res));
  async function proxyHttp(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // /health and /metrics come from the real server behind.
    try {
      const r = await fetch(`${upHttp}${req.url}`, { signal: AbortSignal.timeout(3000) });
      res.writeHead(r.status, { 'content-type': r.headers.get('content-type') ?? 'text/plain' }).end(await r.text());
    } catch {
      res.writeHead(502).end();
    }
  }

  http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    upgrades++;
    if (Date.now() < downUntil) {
      socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    if (bugs.has('refuse-share') && upgrades % (opts.refuseEvery ?? 4) === 0) {
      socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    let path = req.url ?? '/ws';
    if (bugs.has('forget-resume')) path = path.replace(/[?&]resume=[^&]*/, '').replace(/^([^?]*)&/, '$1?');
    const headers: Record<string, string> = {};
    if (req.headers.authorization) headers.authorization = req.headers.authorization;
    const up = new WebSocket(`${upstream.wsUrl}${path}`, { headers, perMessageDeflate: false });
    up.on('unexpected-response', (_r, res) => {
      // The real server refused (401, 404, 1013 at the door): refuse the device the same way.
      socket.end(`HTTP/1.1 ${res.statusCode} ${res.statusMessage}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      up.terminate();
    });
    up.on('error', () => socket.destroy());
    up.once('open', () =>
      wss.handleUpgrade(req, socket, head, (client) => {
        sockets.add(client);
        sockets.add(up);
        pipe(client, up);
      }),
    );
  });

  function pipe(client: WebSocket, up: WebSocket): void {
    let lastOut = 0;
    let slow = false;
    // The reply in flight: when it started, the audio ms sent so far, the bytes announced and forwarded.
    let reply = { t0: 0, audioMs: 0, announced: 0, sent: 0 };
    // Downstream, in order: a message waits for the ones before it (slow-reply holds the reply back).
    const toClient = (data: RawData | string, isBinary: boolean, notBefore = 0) => {
      const delay = slow ? (opts.slowReplyMs ?? 1500) : 0;
      const at = Math.max(Date.now() + delay, lastOut, notBefore);
      lastOut = at;
      const send = () => client.readyState === WebSocket.OPEN && client.send(data, { binary: isBinary });
      if (at <= Date.now()) send();
      else setTimeout(send, at - Date.now());
    };
    up.on('message', (data, isBinary) => {
      if (!isBinary) {
        const text = textOf(data);
        const m = typeOf(text);
        if (m?.type === 'session_started' && bugs.has('no-wake-ack')) return;
        if (m?.type === 'ping' && bugs.has('no-keepalive')) return;
        if (m?.type === 'tts_stream_start' && bugs.has('slow-reply')) slow = true;
        if (m?.type === 'connected' && bugs.has('drop-after-connect')) setTimeout(() => client.terminate(), 1000);
        if (m?.type === 'tts_stream_start')
          reply = { t0: Date.now(), audioMs: 0, announced: Number(m.bytes) || 0, sent: 0 };
        if (m?.type === 'tts_stream_start' && bugs.has('rename-reply-start')) {
          toClient(JSON.stringify({ ...m, type: 'audio_stream_start' }), false);
          return;
        }
        toClient(text, false);
        if (m?.type === 'session_end') slow = false;
        if (m?.type === 'session_started' && bugs.has('early-reply')) {
          const sid = m.session_id as string;
          toClient(
            JSON.stringify({ type: 'tts_stream_start', session_id: sid, sample_rate: 16000, bytes: 3200 }),
            false,
          );
          toClient(Buffer.alloc(3200), true);
          toClient(JSON.stringify({ type: 'tts_stream_end', session_id: sid, chunks: 1, bytes: 3200 }), false);
        }
        return;
      }
      const bytes = Array.isArray(data) ? data.reduce((a, b) => a + b.length, 0) : (data as Buffer).length;
      if (bugs.has('short-reply') && reply.sent >= reply.announced / 2) return;
      reply.sent += bytes;
      if (bugs.has('stutter-reply')) {
        // Chunk k goes out when k chunks' worth of audio, slowed down, has passed since the reply started.
        const due = reply.t0 + reply.audioMs * STUTTER_SLOWDOWN;
        reply.audioMs += pcmDurationMs(bytes);
        toClient(data, true, due);
        return;
      }
      toClient(data, true);
    });
    up.on('ping', () => {
      if (!bugs.has('no-keepalive') && client.readyState === WebSocket.OPEN) client.ping();
    });
    client.on('message', (data, isBinary) => {
      if (!isBinary) {
        const text = textOf(data);
        const m = typeOf(text);
        if (m?.type === 'ping' && bugs.has('close-on-json-ping')) {
          client.close(1011, 'unknown heartbeat');
          up.close(1000);
          return;
        }
        if (m?.type === 'cancel' && bugs.has('ignore-abort')) return;
        if (m?.type === 'hello' && bugs.has('forget-resume') && 'resume' in m) {
          delete m.resume;
          up.send(JSON.stringify(m));
          return;
        }
        up.send(text);
        return;
      }
      up.send(data, { binary: true });
    });
    client.on('ping', () => up.readyState === WebSocket.OPEN && up.ping());
    up.on('close', (code, reason) => {
      sockets.delete(up);
      if (client.readyState !== WebSocket.OPEN) return;
      if (sendable(code)) client.close(code, reason);
      else client.terminate();
    });
    client.on('close', () => {
      sockets.delete(client);
      lost();
      if (up.readyState === WebSocket.OPEN) up.close(1000);
      else up.terminate();
    });
    client.on('error', () => client.terminate());
    up.on('error', () => client.terminate());
  }

  await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()));
  const port = (http.address() as { port: number }).port;
  return {
    url: `ws://127.0.0.1:${port}`,
    upstream,
    async close() {
      for (const s of sockets) s.terminate();
      wss.close();
      http.closeAllConnections();
      await new Promise<void>((r) => http.close(() => r()));
      await upstream.close();
    },
  };
}
