// A small server of an imaginary protocol ("acme": JSON events, 16 kHz PCM both ways), written independently of
// wakestorm's server: the README's user-dialect example is run against it. Loopback, a port of its own.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import { pcmRms } from '../../core/pcm.ts';

export interface AcmeServer {
  url: string;
  /** Conversations answered to the end. */
  finished(): number;
  close(): Promise<void>;
}

const REPLY = Buffer.alloc(32 * 1500, 0); // 1.5 s of PCM
for (let i = 0; i < REPLY.length; i += 2) REPLY.writeInt16LE(Math.round(3000 * Math.sin(i / 20)), i);

export async function startAcmeServer(opts: { apiKey: string; thinkMs: number }): Promise<AcmeServer> {
  const http: Server = createServer((_req, res) => res.writeHead(404).end());
  const wss = new WebSocketServer({ noServer: true });
  let finished = 0;
  http.on('upgrade', (req, socket, head) => {
    const m = /^\/acme\/([A-Za-z0-9._-]+)$/.exec(req.url ?? '');
    if (!m || req.headers['x-api-key'] !== opts.apiKey) {
      socket.end('HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => conversation(ws));
  });
  const conversation = (ws: WebSocket) => {
    let registered = false;
    let talk: { id: string; heard: number; timer?: NodeJS.Timeout } | null = null;
    let n = 0;
    const send = (o: object) => ws.readyState === ws.OPEN && ws.send(JSON.stringify(o));
    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        if (talk && pcmRms(data as Buffer) > 300) talk.heard++;
        return;
      }
      const m = JSON.parse(data.toString()) as { event: string; seq?: number; id?: string; conversation?: string };
      if (m.event === 'register') {
        registered = true;
        send({ event: 'ready' });
      } else if (!registered) ws.close(4000, 'register first');
      else if (m.event === 'heartbeat') send({ event: 'heartbeat_ack', seq: m.seq });
      else if (m.event === 'wake') {
        talk = { id: `c-${n++}`, heard: 0 };
        send({ event: 'listening', id: m.id, conversation: talk.id });
      } else if (m.event === 'done_talking' && talk && m.conversation === talk.id) {
        const t = talk;
        t.timer = setTimeout(() => {
          send({ event: 'heard', conversation: t.id, text: t.heard > 10 ? 'speech' : 'nothing' });
          send({ event: 'speaking', conversation: t.id });
          for (let off = 0; off < REPLY.length; off += 3200) ws.send(REPLY.subarray(off, off + 3200));
          send({ event: 'spoken', conversation: t.id });
        }, opts.thinkMs);
      } else if (m.event === 'played' && talk && m.conversation === talk.id) {
        finished++;
        send({ event: 'finished', conversation: talk.id, status: 'complete' });
        talk = null;
      }
    });
    ws.on('close', () => talk?.timer && clearTimeout(talk.timer));
  };
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  return {
    url: `ws://127.0.0.1:${(http.address() as AddressInfo).port}`,
    finished: () => finished,
    close: async () => {
      for (const c of wss.clients) c.terminate();
      http.closeAllConnections();
      await new Promise<void>((r) => http.close(() => r()));
    },
  };
}
