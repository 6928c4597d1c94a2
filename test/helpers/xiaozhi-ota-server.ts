// A xiaozhi server that needs the firmware's OTA check first, written from what is known of xiaozhi servers (the
// firmware's docs and FACTS: POST to the OTA URL with Device-Id and Client-Id, an answer naming websocket.url and a
// token), not from the device: the token it issues is per device and the WebSocket refuses any other (401). After the
// hello it sends MCP JSON-RPC requests (initialize, then tools/list) and counts the firmware's answers; a listen stop
// gets stt, tts start, ten 60 ms Opus packets and tts stop. `otaStatus` makes every OTA check fail with that status.
// `answersWakeWord` is the bug a real xiaozhi server had (FACTS: the Go port treats `listen detect` as a user turn):
// the wake word's text gets a whole reply at once, while the user has not yet spoken.
import { createServer, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';

export interface OtaServer {
  url: string;
  counts: { ota: number; refused: number; channels: number; mcpAnswers: number; replies: number };
  close(): Promise<void>;
}

/** One Opus packet's TOC for a 60 ms SILK frame (RFC 6716: config 11, one frame) and two payload bytes. */
const PACKET = Buffer.from([11 << 3, 0, 0]);

export async function startOtaServer(o: { otaStatus?: number; answersWakeWord?: boolean } = {}): Promise<OtaServer> {
  const counts = { ota: 0, refused: 0, channels: 0, mcpAnswers: 0, replies: 0 };
  const issued = new Map<string, string>();
  const timers = new Set<NodeJS.Timeout>();
  const http: Server = createServer((req, res) => {
    if (req.method !== 'POST' || req.url !== '/api/ota/') return void res.writeHead(404).end();
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      const id = req.headers['device-id'];
      if (o.otaStatus)
        return void res.writeHead(o.otaStatus, { 'content-type': 'text/plain' }).end('device not activated');
      if (typeof id !== 'string' || !req.headers['client-id'])
        return void res.writeHead(400).end('Device-Id and Client-Id');
      try {
        JSON.parse(body);
      } catch {
        return void res.writeHead(400).end('system info is not JSON');
      }
      counts.ota++;
      const token = `tok-${id.replace(/:/g, '')}`;
      issued.set(id, token);
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          server_time: { timestamp: Date.now(), timezone: 'UTC', timezone_offset: 0 },
          firmware: { version: '1.0.0', url: '' },
          websocket: { url: `ws://${req.headers.host}/xiaozhi/v1/`, token },
        }),
      );
    });
  });
  const wss = new WebSocketServer({ noServer: true });
  http.on('upgrade', (req, socket: Duplex, head) => {
    const id = req.headers['device-id'];
    const want = typeof id === 'string' ? issued.get(id) : undefined;
    if (req.url !== '/xiaozhi/v1/' || !want || req.headers.authorization !== `Bearer ${want}`) {
      counts.refused++;
      return void socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\n\r\n');
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      counts.channels++;
      serve(ws);
    });
  });
  const later = (fn: () => void, ms: number) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
  };
  function serve(ws: WebSocket): void {
    const sid = `s-${counts.channels}`;
    const send = (m: object) => ws.readyState === ws.OPEN && ws.send(JSON.stringify(m));
    const mcp = (id: number, method: string) =>
      send({ session_id: sid, type: 'mcp', payload: { jsonrpc: '2.0', id, method, params: {} } });
    const reply = () => {
      send({ session_id: sid, type: 'tts', state: 'start' });
      for (let i = 0; i < 10; i++) ws.send(PACKET);
      send({ session_id: sid, type: 'tts', state: 'stop' });
      counts.replies++;
    };
    ws.on('message', (data, binary) => {
      if (binary) return;
      const m = JSON.parse(String(data)) as {
        type?: string;
        state?: string;
        text?: string;
        payload?: { id?: number };
      };
      if (m.type === 'hello') {
        send({
          type: 'hello',
          transport: 'websocket',
          session_id: sid,
          audio_params: { format: 'opus', sample_rate: 24000 },
        });
        mcp(1, 'initialize');
      } else if (m.type === 'mcp' && m.payload?.id === 1) {
        counts.mcpAnswers++;
        mcp(2, 'tools/list');
      } else if (m.type === 'mcp' && m.payload?.id === 2) counts.mcpAnswers++;
      else if (m.type === 'listen' && m.state === 'detect' && o.answersWakeWord) {
        send({ session_id: sid, type: 'stt', text: m.text ?? '' });
        reply();
      } else if (m.type === 'listen' && m.state === 'stop') {
        send({ session_id: sid, type: 'stt', text: 'hello' });
        later(reply, 150);
      }
    });
  }
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()));
  const port = (http.address() as { port: number }).port;
  return {
    url: `ws://127.0.0.1:${port}`,
    counts,
    close: async () => {
      for (const t of timers) clearTimeout(t);
      for (const c of wss.clients) c.terminate();
      await new Promise<void>((r) => http.close(() => r()));
    },
  };
}
