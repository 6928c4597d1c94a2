// A voice server shaped unlike wakestorm's dialects, written from its description (issue 37), not from the device:
// it authenticates with a short key in the query string (HTTP 401 on a wrong one, 404 off its path), says nothing when
// a client connects and nothing when a turn starts, takes PCM until the client says the speech is over, then streams
// its reply as binary PCM and a final {"type":"done"}. It counts what it did, so a test can hold the tester's numbers
// to the server's own. Loopback only.
import { createServer, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';

export interface SilentOptions {
  /** The key a client must give as ?key=. */
  key: string;
  /** From the end of speech to the first reply audio, ms. */
  thinkMs?: number;
  /** The reply's length, ms of 16 kHz 16-bit PCM, sent in 100 ms chunks at real-time pace. */
  replyMs?: number;
  /** A broken build: the reply stops this long halfway through, then goes on. */
  stallMidReplyMs?: number;
}

export interface SilentServer {
  url: string;
  /** What the server did: upgrades accepted and refused, turns begun, speech ends heard, replies finished. */
  counts: { accepted: number; refused401: number; refused404: number; turns: number; stops: number; replies: number };
  close(): Promise<void>;
}

const CHUNK_MS = 100;
const BYTES_PER_MS = 32;

export async function startSilentServer(o: SilentOptions): Promise<SilentServer> {
  const counts = { accepted: 0, refused401: 0, refused404: 0, turns: 0, stops: 0, replies: 0 };
  const http: Server = createServer((_req, res) => res.writeHead(404).end());
  const wss = new WebSocketServer({ noServer: true, maxPayload: 1 << 20 });
  const timers = new Set<NodeJS.Timeout>();
  const later = (fn: () => void, ms: number) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };
  http.on('upgrade', (req, socket: Duplex, head) => {
    const u = new URL(req.url ?? '/', 'http://x');
    const refuse = (status: number, text: string) => {
      socket.end(`HTTP/1.1 ${status} ${text}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n${text}\n`);
    };
    if (u.pathname !== '/talk') {
      counts.refused404++;
      return refuse(404, 'Not Found');
    }
    if (u.searchParams.get('key') !== o.key) {
      counts.refused401++;
      return refuse(401, 'Unauthorized');
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      counts.accepted++;
      serve(ws);
    });
  });
  function serve(ws: WebSocket): void {
    let turn = false;
    ws.on('message', (data, isBinary) => {
      if (isBinary) return; // speech: the server listens, and says nothing
      let m: { type?: string } = {};
      try {
        m = JSON.parse(String(data)) as typeof m;
      } catch {
        ws.send(JSON.stringify({ type: 'error', message: 'not JSON' }));
        return;
      }
      if (m.type === 'start') {
        turn = true;
        counts.turns++;
      } else if (m.type === 'stop' && turn) {
        turn = false;
        counts.stops++;
        later(() => reply(ws), o.thinkMs ?? 200);
      } else ws.send(JSON.stringify({ type: 'error', message: `unexpected ${m.type ?? 'message'}` }));
    });
  }
  function reply(ws: WebSocket): void {
    const chunks = Math.max(1, Math.round((o.replyMs ?? 1000) / CHUNK_MS));
    const chunk = Buffer.alloc(CHUNK_MS * BYTES_PER_MS);
    let i = 0;
    const next = () => {
      if (ws.readyState !== ws.OPEN) return;
      if (i === chunks) {
        ws.send(JSON.stringify({ type: 'done' }));
        counts.replies++;
        return;
      }
      ws.send(chunk);
      i++;
      const stall = o.stallMidReplyMs && i === Math.floor(chunks / 2) ? o.stallMidReplyMs : 0;
      later(next, CHUNK_MS + stall);
    };
    next();
  }
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  const port = (http.address() as { port: number }).port;
  return {
    url: `ws://127.0.0.1:${port}`,
    counts,
    close: async () => {
      for (const t of timers) clearTimeout(t);
      for (const c of wss.clients) c.terminate();
      wss.close();
      await new Promise<void>((r) => http.close(() => r()));
    },
  };
}
