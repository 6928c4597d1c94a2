// Two voice servers written from public protocol documentation, not from the device, for the dialects that carry audio
// as base64 inside JSON (issue 37):
// - an OpenAI-Realtime-style server (the Realtime API's GA events): session.created on connect, session.update →
//   session.updated, input_audio_buffer.append with base64 PCM16 at 24 kHz, a server VAD (speech_started, then
//   speech_stopped after 500 ms of silence, committed, conversation.item.added), response.created, audio in
//   response.output_audio.delta, response.output_audio.done, response.done; response.cancel stops a response.
// - a Twilio-media-streams-style application server: connected, start (streamSid, audio/x-mulaw 8 kHz), media events
//   with base64 µ-law; after the caller's speech ends (500 ms of silence), media events back on the same streamSid
//   and a mark, which the caller echoes once the audio before it has played.
// Each keeps its own clock of every turn: when the last voiced audio arrived and when the first reply audio left
// (the independent clock a test holds the device's response_latency to), and counts what it did. Loopback only.
import { createServer, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';

export interface VoiceApiOptions {
  /** Realtime: the bearer key a client must give (Authorization: Bearer …); 401 otherwise. */
  key?: string;
  /** From the server's end-of-speech decision to its first reply audio, ms. */
  thinkMs?: number;
  /** The reply's length in ms of audio. */
  replyMs?: number;
}

export interface Turn {
  /** Server clock (ms): when the last voiced audio of the turn arrived. */
  lastVoicedAt: number;
  /** Server clock (ms): when the first reply audio was sent. */
  firstAudioAt: number;
}

export interface VoiceApiServer {
  url: string;
  counts: { accepted: number; refused: number; speechStopped: number; responses: number; marksEchoed: number };
  turns: Turn[];
  close(): Promise<void>;
}

/** RMS over which a chunk is speech (an energy VAD of the server's own). */
const SPEECH_RMS = 300;
const SILENCE_MS = 500;

function rms(samples: Int16Array): number {
  let sum = 0;
  for (const s of samples) sum += s * s;
  return samples.length ? Math.sqrt(sum / samples.length) : 0;
}

/** G.711 µ-law to linear (ITU-T G.711 decoding: invert, sign, exponent, mantissa, minus the bias). */
function ulawToLinear(u: number): number {
  const x = ~u & 0xff;
  const t = (((x & 0x0f) << 3) + 0x84) << ((x & 0x70) >> 4);
  return x & 0x80 ? 0x84 - t : t - 0x84;
}

/** A turn detector: chunks of audio with their duration; says when speech started and when it stopped. */
class Vad {
  private speaking = false;
  private silentMs = 0;
  lastVoicedAt = 0;
  push(level: number, ms: number, now: number): 'started' | 'stopped' | null {
    if (level >= SPEECH_RMS) {
      this.lastVoicedAt = now;
      this.silentMs = 0;
      if (!this.speaking) {
        this.speaking = true;
        return 'started';
      }
      return null;
    }
    if (!this.speaking) return null;
    this.silentMs += ms;
    if (this.silentMs < SILENCE_MS) return null;
    this.speaking = false;
    this.silentMs = 0;
    return 'stopped';
  }
}

async function serveOn(
  path: string,
  accept: (headers: Record<string, string | string[] | undefined>) => boolean,
  serve: (ws: WebSocket) => void,
  counts: VoiceApiServer['counts'],
  timers: Set<NodeJS.Timeout>,
  turns: Turn[],
): Promise<VoiceApiServer> {
  const http: Server = createServer((_req, res) => res.writeHead(404).end());
  const wss = new WebSocketServer({ noServer: true, maxPayload: 1 << 20 });
  http.on('upgrade', (req, socket: Duplex, head) => {
    const u = new URL(req.url ?? '/', 'http://x');
    const refuse = (status: number, text: string) => {
      counts.refused++;
      socket.end(`HTTP/1.1 ${status} ${text}\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n${text}\n`);
    };
    if (u.pathname !== path) return refuse(404, 'Not Found');
    if (!accept(req.headers)) return refuse(401, 'Unauthorized');
    wss.handleUpgrade(req, socket, head, (ws) => {
      counts.accepted++;
      serve(ws);
    });
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()));
  const port = (http.address() as { port: number }).port;
  return {
    url: `ws://127.0.0.1:${port}`,
    counts,
    turns,
    close: async () => {
      for (const t of timers) clearTimeout(t);
      for (const c of wss.clients) c.terminate();
      await new Promise<void>((r) => http.close(() => r()));
    },
  };
}

function scheduler(timers: Set<NodeJS.Timeout>) {
  return (fn: () => void, ms: number) => {
    const t = setTimeout(() => {
      timers.delete(t);
      fn();
    }, ms);
    timers.add(t);
    return t;
  };
}

/** An OpenAI-Realtime-style server: PCM16 24 kHz both ways, base64 in JSON, server VAD. */
export async function startRealtimeServer(o: VoiceApiOptions = {}): Promise<VoiceApiServer> {
  const counts = { accepted: 0, refused: 0, speechStopped: 0, responses: 0, marksEchoed: 0 };
  const turns: Turn[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const later = scheduler(timers);
  let ids = 0;
  const id = (p: string) => `${p}_${++ids}`;
  const serve = (ws: WebSocket) => {
    const send = (type: string, rest: Record<string, unknown> = {}) => {
      if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ type, event_id: id('event'), ...rest }));
    };
    const vad = new Vad();
    let response: { id: string; cancelled: boolean } | null = null;
    let audioMs = 0;
    send('session.created', { session: { type: 'realtime', id: id('sess') } });
    const respond = () => {
      const r = { id: id('resp'), cancelled: false };
      response = r;
      const lastVoicedAt = vad.lastVoicedAt;
      send('response.created', { response: { id: r.id, status: 'in_progress' } });
      const chunkMs = 100;
      const chunks = Math.ceil((o.replyMs ?? 1500) / chunkMs);
      // 24 kHz PCM16: 48 bytes a ms; a quiet tone, sent a little faster than it plays, as a TTS stream is.
      const pcm = Buffer.alloc(chunkMs * 48);
      for (let i = 0; i < pcm.length / 2; i++) pcm.writeInt16LE(Math.round(2000 * Math.sin(i / 8)), i * 2);
      const delta = pcm.toString('base64');
      let k = 0;
      const next = () => {
        if (r.cancelled || ws.readyState !== ws.OPEN) return;
        if (k === 0) turns.push({ lastVoicedAt, firstAudioAt: Date.now() });
        send('response.output_audio.delta', { response_id: r.id, item_id: 'item_r', delta });
        if (++k < chunks) return void later(next, chunkMs * 0.8);
        send('response.output_audio.done', { response_id: r.id });
        send('response.done', { response: { id: r.id, status: 'completed' } });
        counts.responses++;
        response = null;
      };
      later(next, 0);
    };
    ws.on('message', (data, isBinary) => {
      if (isBinary) return send('error', { error: { type: 'invalid_request_error', message: 'binary frames' } });
      let m: { type?: string; audio?: string } = {};
      try {
        m = JSON.parse(String(data)) as typeof m;
      } catch {
        return send('error', { error: { type: 'invalid_request_error', message: 'not JSON' } });
      }
      if (m.type === 'session.update') return send('session.updated', { session: { type: 'realtime' } });
      if (m.type === 'response.cancel') {
        if (response) {
          response.cancelled = true;
          send('response.done', { response: { id: response.id, status: 'cancelled' } });
          response = null;
        }
        return;
      }
      if (m.type === 'input_audio_buffer.commit') return;
      if (m.type !== 'input_audio_buffer.append' || typeof m.audio !== 'string')
        return send('error', { error: { type: 'invalid_request_error', message: `unexpected ${m.type}` } });
      const buf = Buffer.from(m.audio, 'base64');
      const samples = new Int16Array(buf.buffer, buf.byteOffset, buf.length >> 1);
      const ms = samples.length / 24;
      audioMs += ms;
      const said = vad.push(rms(samples), ms, Date.now());
      if (said === 'started') send('input_audio_buffer.speech_started', { audio_start_ms: audioMs, item_id: 'item_u' });
      if (said === 'stopped') {
        counts.speechStopped++;
        send('input_audio_buffer.speech_stopped', { audio_end_ms: audioMs, item_id: 'item_u' });
        send('input_audio_buffer.committed', { item_id: 'item_u' });
        send('conversation.item.added', { item: { id: 'item_u', type: 'message', role: 'user' } });
        later(respond, o.thinkMs ?? 200);
      }
    });
  };
  const accept = (h: Record<string, string | string[] | undefined>) => !o.key || h.authorization === `Bearer ${o.key}`;
  return serveOn('/v1/realtime', accept, serve, counts, timers, turns);
}

/** A Twilio-media-streams-style application server: µ-law 8 kHz both ways, base64 in media events, marks. */
export async function startMediaStreamServer(o: VoiceApiOptions = {}): Promise<VoiceApiServer> {
  const counts = { accepted: 0, refused: 0, speechStopped: 0, responses: 0, marksEchoed: 0 };
  const turns: Turn[] = [];
  const timers = new Set<NodeJS.Timeout>();
  const later = scheduler(timers);
  let marks = 0;
  const serve = (ws: WebSocket) => {
    const vad = new Vad();
    let streamSid: string | null = null;
    let replying = false;
    const send = (m: Record<string, unknown>) => ws.readyState === ws.OPEN && ws.send(JSON.stringify(m));
    const reply = () => {
      if (!streamSid) return;
      const sid = streamSid;
      const lastVoicedAt = vad.lastVoicedAt;
      // 20 ms of µ-law is 160 bytes; a quiet tone, sent a little faster than it plays.
      const ulaw = Buffer.alloc(160, 0xff);
      for (let i = 0; i < ulaw.length; i += 4) ulaw[i] = 0x9e;
      const payload = ulaw.toString('base64');
      const chunks = Math.ceil((o.replyMs ?? 1500) / 20);
      let k = 0;
      const next = () => {
        if (ws.readyState !== ws.OPEN) return;
        if (k === 0) turns.push({ lastVoicedAt, firstAudioAt: Date.now() });
        send({ event: 'media', streamSid: sid, media: { payload } });
        if (++k < chunks) return void later(next, 16);
        send({ event: 'mark', streamSid: sid, mark: { name: `reply-${++marks}` } });
        counts.responses++;
        replying = false;
      };
      next();
    };
    ws.on('message', (data) => {
      let m: { event?: string; streamSid?: string; start?: { streamSid?: string }; media?: { payload?: string } };
      try {
        m = JSON.parse(String(data)) as typeof m;
      } catch {
        return;
      }
      if (m.event === 'start') streamSid = m.start?.streamSid ?? m.streamSid ?? null;
      else if (m.event === 'mark') counts.marksEchoed++;
      else if (m.event === 'media' && typeof m.media?.payload === 'string' && !replying) {
        const u = Buffer.from(m.media.payload, 'base64');
        const samples = Int16Array.from(u, ulawToLinear);
        if (vad.push(rms(samples), u.length / 8, Date.now()) === 'stopped') {
          counts.speechStopped++;
          replying = true;
          later(reply, o.thinkMs ?? 200);
        }
      }
    });
  };
  return serveOn('/media', () => true, serve, counts, timers, turns);
}
