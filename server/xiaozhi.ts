// The reference server's second dialect: xiaozhi-esp32's WebSocket protocol on /xiaozhi/v1/ (the firmware's
// docs/websocket.md and main/protocols/). One channel per conversation: the device says hello with its audio_params and
// gets the server's hello (transport websocket, a session_id); `listen` start opens a session on the same pipeline as
// wakestorm's (server/session.ts), fed by decoding the device's Opus to PCM for the energy VAD; `listen` stop ends speech
// (manual mode); `abort` stops the reply. The session's events go out as stt, llm and tts start/sentence_start/stop,
// the reply as the committed Opus packets. xiaozhi has no error message and no resume: bad input closes the channel.
import { CLOSE } from '../core/protocol.ts';
import { frameAudio, unframeAudio, type AudioFraming } from '../core/dialect.ts';
import { loadReplies } from './audio.ts';
import { OpusDecoder } from './opus-codec.ts';
import type { ServerConfig } from './config.ts';
import type { ServerMetrics } from './metrics.ts';
import { Session, type SessionLink } from './session.ts';
import type { RateLimits, Wire, WireSocket } from './wire.ts';

/** The opus frames of xiaozhi: 60 ms at 16 kHz mono. */
const FRAME_SAMPLES = 960;
let sessionCounter = 0;

/** The framing of binary messages by the upgrade's Protocol-Version header (1 raw, 2 and 3 with a header). */
export function framingFor(protocolVersion: string | undefined): AudioFraming | null {
  if (protocolVersion === undefined || protocolVersion === '' || protocolVersion === '1') return 'raw';
  if (protocolVersion === '2') return 'xiaozhi-v2';
  if (protocolVersion === '3') return 'xiaozhi-v3';
  return null;
}

export class XiaozhiWire implements SessionLink, Wire {
  readonly codec = 'opus' as const;
  /** The device's hello was answered. */
  greeted = false;
  private session: Session | null = null;
  private decoder: OpusDecoder | null = null;
  private readonly channelId: string;
  private wakeWord = '';
  private downFrames = 0;
  /** Voice last heard on this channel (or the channel's start, or a turn's end): the no-voice close counts from it. */
  private lastVoiceAt = 0;
  private noVoiceTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly sock: WireSocket,
    private readonly limits: RateLimits,
    readonly deviceId: string,
    private readonly framing: AudioFraming,
    private readonly cfg: ServerConfig,
    private readonly metrics: ServerMetrics,
    private readonly onSessionDone: () => void,
  ) {
    this.channelId = `xz-${(sessionCounter++).toString(36)}-${deviceId}`.slice(0, 64);
  }

  /** A conversation in flight (the drain waits for it); a microphone streaming silence is not one. */
  get busy(): boolean {
    const s = this.session;
    return !!s && !s.ended && (s.heardVoice || s.stage !== 'listening');
  }

  /** xiaozhi has no application heartbeat: the socket's WebSocket ping only. */
  heartbeat(): void {}

  onText(text: string): void {
    if (!this.limits.text.take(1)) return this.sock.close(CLOSE.POLICY, 'too many messages');
    let m: Record<string, unknown>;
    try {
      const v = JSON.parse(text) as unknown;
      if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
      m = v as Record<string, unknown>;
    } catch {
      return this.refuse('text frame is not a JSON object');
    }
    if (!this.greeted) {
      if (m.type !== 'hello') return this.refuse('hello expected first');
      const a = m.audio_params as Record<string, unknown> | undefined;
      if (m.transport !== 'websocket') return this.refuse('hello: transport must be "websocket"');
      if (a && (a.format !== 'opus' || a.sample_rate !== 16000 || a.channels !== 1))
        return this.refuse('hello: audio_params must be opus, 16000 Hz, 1 channel');
      this.greeted = true;
      this.sock.greeted();
      this.heard();
      this.sock.sendJson({
        type: 'hello',
        transport: 'websocket',
        session_id: this.channelId,
        // Real servers announce 24 kHz. The reply packets were encoded from 16 kHz speech; an Opus stream decodes at
        // any Opus rate, so the device's decoder runs at the announced one, as against a real server.
        audio_params: { format: 'opus', sample_rate: this.cfg.xiaozhiDownlinkRate, channels: 1, frame_duration: 60 },
      });
      return;
    }
    switch (m.type) {
      case 'listen':
        if (m.state === 'detect') this.wakeWord = typeof m.text === 'string' ? m.text.slice(0, 64) : '';
        else if (m.state === 'start') this.startListening();
        else if (m.state === 'stop') this.session?.endOfSpeech();
        else return this.refuse('listen: state must be start, stop or detect');
        return;
      case 'abort':
        if (this.session && !this.session.ended) {
          this.session.end('barged_in');
          this.sock.sendJson({ session_id: this.channelId, type: 'tts', state: 'stop' });
        }
        return;
      case 'hello':
        return this.refuse('hello is only for the start of a channel');
      case 'mcp':
      case 'iot':
        return; // device capabilities: nothing for a load-test server to do with them
      default:
        return this.refuse(`unknown message type ${JSON.stringify(String(m.type)).slice(0, 40)}`);
    }
  }

  onBinary(buf: Buffer): void {
    if (!this.limits.audio.take(buf.length)) return this.sock.close(CLOSE.POLICY, 'audio faster than 4x real time');
    if (!this.greeted) return this.refuse('hello expected before audio');
    const s = this.session;
    if (!s || s.ended) return; // audio outside listening: the firmware may still be flushing its microphone
    const payload = unframeAudio(this.framing, buf);
    if (!payload || payload.length === 0) return this.refuse('binary frame does not hold together in its framing');
    this.decoder ??= new OpusDecoder(16000);
    let pcm: Buffer;
    try {
      pcm = this.decoder.decode(payload);
    } catch {
      return this.refuse('audio is not an Opus packet');
    }
    if (pcm.length > FRAME_SAMPLES * 2 * 2) return this.refuse('Opus packet longer than 120 ms');
    if (s.onAudio(pcm)) this.lastVoiceAt = performance.now();
  }

  /** The channel closed: a conversation still in flight cannot be resumed in this dialect. */
  onClose(): void {
    if (this.noVoiceTimer) clearTimeout(this.noVoiceTimer);
    this.noVoiceTimer = null;
    this.session?.onLinkLost();
    if (this.session && !this.session.ended) this.session.discard();
    this.decoder?.free();
    this.decoder = null;
  }

  // ---- what the session says, in xiaozhi's words ----

  sendJson(msg: object): boolean {
    const m = msg as { type: string; text?: string };
    const sid = this.channelId;
    switch (m.type) {
      case 'transcript':
        return this.sock.sendJson({ session_id: sid, type: 'stt', text: m.text });
      case 'llm_response':
        return this.sock.sendJson({ session_id: sid, type: 'llm', emotion: 'happy', text: '🙂' });
      case 'tts_stream_start': {
        const ok = this.sock.sendJson({
          session_id: sid,
          type: 'tts',
          state: 'start',
          sample_rate: this.cfg.xiaozhiDownlinkRate,
        });
        return (
          ok &&
          this.sock.sendJson({
            session_id: sid,
            type: 'tts',
            state: 'sentence_start',
            text: this.session?.replyText ?? '',
          })
        );
      }
      case 'tts_stream_end': {
        const ok = this.sock.sendJson({ session_id: sid, type: 'tts', state: 'stop' });
        // xiaozhi devices do not confirm playback: the reply sent whole is the turn done.
        this.session?.playbackComplete();
        return ok;
      }
      default:
        // session_started, session_end, errors: xiaozhi has no such messages.
        return true;
    }
  }

  /** Reply audio in the channel's framing (the timestamp of BinaryProtocol2 counts the reply's 60 ms frames). */
  sendBinary(buf: Buffer): boolean {
    if (this.framing === 'raw') return this.sock.sendBinary(buf);
    return this.sock.sendBinary(Buffer.from(frameAudio(this.framing, buf, this.downFrames++ * 60)));
  }

  sessionDone(s: Session): void {
    if (this.session === s) this.session = null;
    this.heard();
    this.onSessionDone();
  }

  /**
   * The no-voice close (xiaozhi-esp32-server's close_connection_no_voice_time): a device in auto mode goes back to
   * listening after each reply and streams its microphone until it hears speech; a channel that hears none for
   * xiaozhiNoVoiceMs is closed with 1000, which sends the device back to idle. Never while a reply is owed.
   */
  private heard(): void {
    this.lastVoiceAt = performance.now();
    const limit = this.cfg.xiaozhiNoVoiceMs;
    if (limit <= 0 || this.noVoiceTimer) return;
    const check = () => {
      this.noVoiceTimer = null;
      const quiet = performance.now() - this.lastVoiceAt;
      if (quiet < limit || this.busy) {
        this.noVoiceTimer = setTimeout(check, Math.max(100, limit - quiet));
        return;
      }
      this.sock.log(`xiaozhi ${this.deviceId}: no voice for ${limit} ms, closing the channel`);
      this.session?.end('timeout');
      this.sock.close(CLOSE.NORMAL, 'no voice');
    };
    this.noVoiceTimer = setTimeout(check, limit);
  }

  private startListening(): void {
    if (this.session && !this.session.ended) this.session.end('barged_in');
    const replies = loadReplies();
    const n = sessionCounter++;
    this.session = new Session(
      `${this.channelId}-${n.toString(36)}`.slice(0, 64),
      this.wakeWord || 'listen',
      replies[n % replies.length]!,
      this.cfg,
      this.metrics,
      this,
      true,
    );
  }

  private refuse(why: string): void {
    this.metrics.errors.labels('bad_message').inc();
    this.sock.log(`xiaozhi ${this.deviceId}: ${why}`);
    this.sock.close(CLOSE.POLICY, why.slice(0, 120));
  }
}
