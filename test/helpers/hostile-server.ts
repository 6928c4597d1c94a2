// Servers that misbehave on purpose, for the hostile-server suite: each speaks enough of the wakestorm protocol to be
// connected to, then does one bad thing (floods, sends a huge frame, deep JSON, a reply that never ends, an unusual
// close code), or never answers at all. Written with `ws` apart from the reference server. Loopback only.
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createTcpServer, type Socket } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';

export type Hostility =
  /** 5,000 small messages a second to every device. */
  | 'flood'
  /** A 4 MiB binary frame to every device, once connected. */
  | 'huge-frame'
  /** A 50 MB binary frame to every device, once connected, and again on every reconnect. */
  | 'giant-frame'
  /** A text message of JSON nested 10,000 deep. */
  | 'deep-json'
  /** A text frame that is not UTF-8, once connected. */
  | 'bad-utf8'
  /** A frame with a reserved opcode (3), once connected: it breaks WebSocket framing. */
  | 'bad-opcode'
  /** Every reply streams forever (announces 32 KiB, never stops). */
  | 'endless-reply'
  /** One connection in ten gets a reply that streams forever; the others a normal one. */
  | 'endless-reply-some'
  /** Closes every link 2 s after connected with the given close code. */
  | 'close-code'
  /** Text frames that are not JSON ("hello, device"), once connected and then every 2 s. */
  | 'not-json'
  /** Binary audio frames (640 bytes every 20 ms for 1 s) with no session: from 500 ms after connected, before any wake. */
  | 'stray-audio'
  /** Every 101 names the subprotocol `chat`, which no device asked for (RFC 6455 §4.1: the client must fail it). */
  | 'unasked-subprotocol'
  /** Names no subprotocol in its 101, whatever the device asked for. */
  | 'no-subprotocol'
  /** Stops reading its sockets 2 s after connected (answers nothing more, never a close): it still writes. */
  | 'stop-reading';

export interface HostileServer {
  url: string;
  close(): Promise<void>;
}

const CHUNK = Buffer.alloc(4096, 1);
/** 50 MB, allocated once per process when first sent (a server shares it between its sends). */
let giant: Buffer | null = null;
const GIANT = () => (giant ??= Buffer.alloc(50 * 1000 * 1000, 7));

/** A server of one hostility (and `code` for close-code). */
export async function startHostileServer(h: Hostility, code = 4123): Promise<HostileServer> {
  const http: Server = createHttpServer((req, res) => {
    if (req.url === '/health') res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
    else res.writeHead(404).end();
  });
  const wss = new WebSocketServer({
    server: http,
    perMessageDeflate: false,
    // ws picks the first asked-for subprotocol unless told otherwise.
    ...(h === 'no-subprotocol' ? { handleProtocols: () => false as const } : {}),
  });
  if (h === 'unasked-subprotocol') wss.on('headers', (headers) => headers.push('Sec-WebSocket-Protocol: chat'));
  const timers = new Set<NodeJS.Timeout>();
  const every = (ms: number, fn: () => void) => {
    const t = setInterval(fn, ms);
    timers.add(t);
    return t;
  };
  let n = 0;
  wss.on('connection', (ws: WebSocket, req) => {
    const id = /\/ws\/([^?]+)/.exec(req.url ?? '')?.[1] ?? `d-${n}`;
    const k = n++;
    const send = (m: object) => ws.readyState === ws.OPEN && ws.send(JSON.stringify(m));
    send({
      type: 'connected',
      status: 'connected',
      client_id: id,
      connection_id: `c-${k}`,
      resume_token: `r-${k}-xxxxxxxxxxxxxxxx`,
      keepalive_ms: 10_000,
      server_time: Date.now(),
      resumed: false,
      session: null,
    });
    const stop: NodeJS.Timeout[] = [];
    ws.on('close', () => stop.forEach((t) => (clearInterval(t), timers.delete(t))));
    ws.on('error', () => {});
    if (h === 'flood')
      stop.push(
        every(10, () => {
          for (let i = 0; i < 50; i++) send({ type: 'noise', i });
        }),
      );
    if (h === 'giant-frame') setTimeout(() => ws.readyState === ws.OPEN && ws.send(GIANT()), 500);
    if (h === 'huge-frame') setTimeout(() => ws.readyState === ws.OPEN && ws.send(Buffer.alloc(4 * 1024 * 1024)), 500);
    if (h === 'deep-json')
      setTimeout(() => ws.readyState === ws.OPEN && ws.send(`${'['.repeat(10_000)}${']'.repeat(10_000)}`), 500);
    if (h === 'bad-utf8')
      setTimeout(
        () =>
          ws.readyState === ws.OPEN && ws.send(Buffer.from('{"type":"x","t":"\xff\xfe"}', 'latin1'), { binary: false }),
        500,
      );
    if (h === 'bad-opcode')
      setTimeout(
        () =>
          ws.readyState === ws.OPEN && (ws as unknown as { _socket: Socket })._socket.write(Buffer.from([0x83, 0x00])),
        500,
      );
    if (h === 'not-json') {
      setTimeout(() => ws.readyState === ws.OPEN && ws.send('hello, device'), 500);
      stop.push(every(2000, () => ws.readyState === ws.OPEN && ws.send('hello, device')));
    }
    if (h === 'stray-audio')
      setTimeout(() => {
        const t = every(20, () => ws.readyState === ws.OPEN && ws.send(Buffer.alloc(640)));
        stop.push(t);
        setTimeout(() => (clearInterval(t), timers.delete(t)), 1000);
      }, 500);
    if (h === 'stop-reading')
      setTimeout(() => ws.readyState === ws.OPEN && (ws as unknown as { _socket: Socket })._socket.pause(), 2000);
    if (h === 'close-code') setTimeout(() => ws.readyState === ws.OPEN && ws.close(code, 'hostile'), 2000);
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      let m: { type?: string; wake_id?: string; id?: number; t?: number };
      try {
        m = JSON.parse(String(data));
      } catch {
        return;
      }
      if (m.type === 'ping') send({ type: 'pong', id: m.id, t: m.t });
      if (m.type !== 'hotword_detected') return;
      const sid = `s-${k}-${m.wake_id}`;
      send({ type: 'session_started', session_id: sid, wake_id: m.wake_id });
      // After 3 s of speech, a reply: endless for every link, for one in ten, or a normal one.
      setTimeout(() => {
        // The link may be gone by then (the run ended): an interval made now would outlive the server.
        if (ws.readyState !== ws.OPEN) return;
        send({ type: 'transcript', session_id: sid, text: 'x' });
        send({ type: 'tts_stream_start', session_id: sid, sample_rate: 16000, bytes: 32 * 1024 });
        const endless = h === 'endless-reply' || (h === 'endless-reply-some' && k % 10 === 0);
        let sent = 0;
        const t = every(128, () => {
          if (ws.readyState !== ws.OPEN) {
            clearInterval(t);
            timers.delete(t);
            return;
          }
          ws.send(CHUNK);
          sent += CHUNK.length;
          if (!endless && sent >= 32 * 1024) {
            clearInterval(t);
            timers.delete(t);
            send({ type: 'tts_stream_end', session_id: sid, chunks: 8, bytes: 32 * 1024 });
            setTimeout(() => send({ type: 'session_end', session_id: sid, reason: 'complete' }), 300);
          }
        });
        stop.push(t);
      }, 3500);
    });
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()));
  const port = (http.address() as { port: number }).port;
  return {
    url: `ws://127.0.0.1:${port}`,
    async close() {
      for (const t of timers) clearInterval(t);
      for (const c of wss.clients) c.terminate();
      wss.close();
      http.closeAllConnections();
      await new Promise<void>((r) => http.close(() => r()));
    },
  };
}

/** A TCP listener that accepts and never says a word (no HTTP, no upgrade). */
export async function startSilentListener(): Promise<HostileServer> {
  const sockets = new Set<Socket>();
  const srv = createTcpServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  return {
    url: `ws://127.0.0.1:${(srv.address() as { port: number }).port}`,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}
