// The wakestorm protocol on /ws (docs/protocol.md): hello first unless the path named the device, then pings,
// wakes and the session's messages; binary frames are PCM audio. Bad input gets an `error` message; too many in a row
// close the socket (1008).
import {
  CLOSE,
  DEFAULTS,
  MAX_AUDIO_FRAME_BYTES,
  MIN_AUDIO_FRAME_BYTES,
  parseDeviceMessage,
  type DeviceMessage,
  type ErrorCode,
} from '../core/protocol.ts';
import type { DeviceState } from './devices.ts';
import type { ServerMetrics } from './metrics.ts';
import { RateLimits, type Wire, type WireSocket } from './wire.ts';

/** The device this wire speaks for: its state once identified (server/devices.ts binds it). */
export interface WakestormLink {
  readonly deviceId: string | null;
  readonly state: DeviceState | null;
  /** Binds the link to the device's state (resuming it or starting fresh) and sends `connected`. */
  identify(deviceId: string, resumeToken: string | undefined): void;
}

export class WakestormWire implements Wire {
  private errorsInRow = 0;

  constructor(
    private readonly sock: WireSocket,
    private readonly link: WakestormLink,
    private readonly limits: RateLimits,
    private readonly metrics: ServerMetrics,
    /** The device ids this connection's token may claim (null: any). */
    private readonly claim: RegExp | null,
  ) {}

  get busy(): boolean {
    return !!this.link.state?.session?.active;
  }

  heartbeat(): void {
    this.sock.sendJson({ type: 'ping', t: Date.now() });
  }

  onClose(): void {}

  onText(text: string): void {
    // On /ws nothing but a hello may come first.
    if (this.link.deviceId === null) return this.beforeHello(text);
    if (!this.limits.text.take(1)) return this.error('rate_limited', 'too many messages; slow down');
    const parsed = parseDeviceMessage(text);
    if (!parsed.ok) return this.error(parsed.code, parsed.message);
    this.dispatch(parsed.msg);
  }

  onBinary(frame: Buffer): void {
    if (this.link.deviceId === null) return this.sock.close(CLOSE.PROTOCOL_ERROR, 'hello expected before audio');
    if (frame.length < MIN_AUDIO_FRAME_BYTES || frame.length > MAX_AUDIO_FRAME_BYTES || frame.length % 2 !== 0) {
      return this.error(
        'bad_audio',
        `audio frames must be an even count of ${MIN_AUDIO_FRAME_BYTES}-${MAX_AUDIO_FRAME_BYTES} bytes, got ${frame.length}`,
      );
    }
    if (!this.limits.audio.take(frame.length)) return this.error('rate_limited', 'audio faster than 4x real time');
    const session = this.link.state?.session;
    if (!session || session.ended) return this.error('no_session', 'audio with no active session');
    this.errorsInRow = 0;
    session.onAudio(frame);
  }

  private error(code: ErrorCode, message: string): void {
    this.metrics.errors.labels(code).inc();
    this.sock.sendJson({ type: 'error', code, message });
    if (++this.errorsInRow >= DEFAULTS.errors_in_a_row_limit) this.sock.close(CLOSE.POLICY, 'too many errors');
  }

  private beforeHello(text: string): void {
    const parsed = parseDeviceMessage(text);
    if (parsed.ok && parsed.msg.type === 'hello') {
      this.sock.greeted();
      this.errorsInRow = 0;
      if (this.claim && !this.claim.test(parsed.msg.device_id)) {
        this.metrics.rejected.labels('forbidden').inc();
        return this.sock.close(CLOSE.POLICY, 'device id not allowed for this token');
      }
      this.link.identify(parsed.msg.device_id, parsed.msg.resume);
      return;
    }
    if (!parsed.ok && parsed.code === 'bad_message' && /"type":\s*"hello"/.test(text)) {
      return this.error('bad_message', parsed.message);
    }
    this.sock.close(CLOSE.PROTOCOL_ERROR, 'hello expected first');
  }

  private dispatch(msg: DeviceMessage): void {
    const state = this.link.state;
    if (!state) return;
    switch (msg.type) {
      case 'hello':
        return this.error('bad_message', 'already identified: hello is only for the first message on /ws');
      case 'ping':
        this.errorsInRow = 0;
        this.sock.sendJson(msg.id === undefined ? { type: 'pong', t: msg.t } : { type: 'pong', id: msg.id, t: msg.t });
        return;
      case 'pong':
        this.errorsInRow = 0;
        return;
      case 'hotword_detected':
        this.errorsInRow = 0;
        state.wake(msg.wake_id);
        return;
      default: {
        const s = state.session;
        if (!s || s.ended || s.id !== msg.session_id)
          return this.error('no_session', `no active session "${msg.session_id.slice(0, 64)}"`);
        this.errorsInRow = 0;
        if (msg.type === 'end_of_speech') s.endOfSpeech();
        else if (msg.type === 'playback_complete') s.playbackComplete();
        else s.end('cancelled');
      }
    }
  }
}
