// The one Node client of the wire protocol (docs/protocol.md), over `ws`: tests, benches and the fuzz suite drive the
// server with it. It queues what the server sends so a caller can await the next message of a type, answers the
// server's keepalive pings when asked to, and runs a whole conversation (wake → speech → reply → playback) in one call.
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';
import { PCM_BYTES_PER_MS, type DeviceMessage, type ServerMessage, type SessionEndReason } from '../core/protocol.ts';

/** The committed utterance (16 kHz mono PCM, espeak-ng speech). */
export const UTTERANCE = readFileSync(new URL('../audio/utterance.pcm', import.meta.url));
/** 20 ms of PCM: the uplink frame every shipped profile sends. */
const FRAME_BYTES = 20 * PCM_BYTES_PER_MS;

export interface ClientOptions extends WebSocket.ClientOptions {
  /** Answer the server's `ping` with `pong` and keep pings out of the queue (long-lived bench devices). */
  answerPings?: boolean;
}

export class ProtocolClient {
  readonly ws: WebSocket;
  readonly messages: ServerMessage[] = [];
  binaryBytes = 0;
  binaryFrames = 0;
  closeCode: number | null = null;
  closeReason = '';
  readonly opened: Promise<void>;
  readonly closed: Promise<number>;
  private waiters: (() => void)[] = [];

  constructor(url: string, opts: ClientOptions = {}) {
    const { answerPings = false, ...wsOpts } = opts;
    this.ws = new WebSocket(url, wsOpts);
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
      } else {
        const m = JSON.parse(String(data)) as ServerMessage;
        if (answerPings && m.type === 'ping') this.send({ type: 'pong', id: m.id, t: m.t });
        else this.messages.push(m);
      }
      this.wake();
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Sends a protocol message (or, for hostile tests, any object). */
  send(msg: DeviceMessage | object): void {
    this.ws.send(JSON.stringify(msg));
  }

  /** Waits for (and removes from the queue) the first message of this type. */
  async next<T extends ServerMessage['type']>(type: T, timeoutMs = 3000): Promise<Extract<ServerMessage, { type: T }>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.messages.findIndex((m) => m.type === type);
      if (i >= 0) return this.messages.splice(i, 1)[0] as Extract<ServerMessage, { type: T }>;
      if (this.closeCode !== null)
        throw new Error(
          `closed (${this.closeCode}) while waiting for ${type}; have ${this.messages.map((m) => m.type).join(',')}`,
        );
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
    return Promise.race([
      this.closed,
      new Promise<number>((_, rej) => setTimeout(() => rej(new Error('timeout waiting for close')), timeoutMs)),
    ]);
  }

  /** Streams PCM in frames at once, as fast as the server's audio burst allows (tests need no real time). */
  sendAudio(pcm: Buffer, frame = FRAME_BYTES): void {
    for (let i = 0; i + frame <= pcm.length; i += frame) this.ws.send(pcm.subarray(i, i + frame));
  }

  /** Streams PCM in real time, one frame per frame duration; resolves after the last one (or when `stop()` is true). */
  async sendAudioRealtime(pcm: Buffer, stop: () => boolean = () => false, frame = FRAME_BYTES): Promise<void> {
    const frameMs = frame / PCM_BYTES_PER_MS;
    const t0 = performance.now();
    for (let k = 0; (k + 1) * frame <= pcm.length; k++) {
      if (stop() || this.ws.readyState !== WebSocket.OPEN) return;
      this.ws.send(pcm.subarray(k * frame, (k + 1) * frame));
      const wait = t0 + (k + 1) * frameMs - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  }

  /**
   * One conversation as a well-behaved device has it: wake, the utterance, end of speech, the whole reply, playback
   * confirmed. Resolves to how the server ended the session.
   */
  async conversation(
    wakeId: string,
    o: { realtime?: boolean; replyTimeoutMs?: number; stop?: () => boolean } = {},
  ): Promise<SessionEndReason> {
    this.send({ type: 'hotword_detected', wake_id: wakeId, t: Date.now() });
    const started = await this.next('session_started', 5000);
    if (o.realtime) await this.sendAudioRealtime(UTTERANCE, o.stop);
    else this.sendAudio(UTTERANCE);
    this.send({ type: 'end_of_speech', session_id: started.session_id });
    await this.next('tts_stream_end', o.replyTimeoutMs ?? 15_000);
    this.send({ type: 'playback_complete', session_id: started.session_id });
    return (await this.next('session_end', 5000)).reason;
  }

  close(): void {
    this.ws.terminate();
  }
}

/** Opens a path-identified device and waits for `connected`. */
export async function connectDevice(base: string, id: string, query = '', opts: ClientOptions = {}) {
  const c = new ProtocolClient(`${base}/ws/${id}${query}`, opts);
  await c.opened;
  const connected = await c.next('connected');
  return { c, connected };
}

/** The HTTP status an upgrade attempt gets, or 101 (0 when nothing answers). */
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
