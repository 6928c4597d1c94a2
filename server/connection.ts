// One device WebSocket: hello or path identity, keepalive and idle timeout, message dispatch, errors, rate limits, send-buffer bound.
import type { WebSocket } from 'ws';
import {
  CLOSE,
  DEFAULTS,
  MAX_AUDIO_FRAME_BYTES,
  MIN_AUDIO_FRAME_BYTES,
  parseDeviceMessage,
  type DeviceMessage,
  type ErrorCode,
} from '../core/protocol.ts';
import type { AudioFraming } from '../core/dialect.ts';
import type { ServerConfig } from './config.ts';
import type { DeviceLink, DeviceState } from './devices.ts';
import type { ServerMetrics } from './metrics.ts';
import { XiaozhiWire } from './xiaozhi.ts';

/** A progress ping goes out every this many bytes sent (at most MAX_PROBES unanswered at once). */
const PROBE_EVERY_BYTES = 16 * 1024;
const MAX_PROBES = 8;

/** What a connection needs from the server around it. */
export interface ConnectionHost {
  cfg: ServerConfig;
  metrics: ServerMetrics;
  idleTimeoutMs: number;
  /** Binds the connection to the device's state (resuming it or starting fresh) and sends `connected`. */
  attach(conn: Connection, deviceId: string, resumeToken: string | undefined): void;
  /** The socket is gone. */
  closed(conn: Connection, code: number): void;
  /** A session of a connection that holds its own (xiaozhi) ended. */
  sessionDone(): void;
  log(line: string): void;
}

/** A channel that speaks xiaozhi-esp32's dialect: the device id from its Device-Id header, its binary framing. */
export interface XiaozhiChannel {
  deviceId: string;
  framing: AudioFraming;
}

/** A token bucket: `rate` per second, holding at most `burst`. */
class Bucket {
  private level: number;
  private last = Date.now();
  constructor(
    private readonly rate: number,
    private readonly burst: number,
  ) {
    this.level = burst;
  }
  take(n: number): boolean {
    const now = Date.now();
    this.level = Math.min(this.burst, this.level + ((now - this.last) * this.rate) / 1000);
    this.last = now;
    if (this.level < n) return false;
    this.level -= n;
    return true;
  }
}

export class Connection implements DeviceLink {
  /** Set once the device is identified; null again after it is replaced or closed. */
  state: DeviceState | null = null;
  deviceId: string | null = null;
  private errorsInRow = 0;
  private closing = false;
  private helloTimer: NodeJS.Timeout | null = null;
  private keepaliveTimer: NodeJS.Timeout;
  private idleTimer: NodeJS.Timeout;
  private readonly textBucket: Bucket;
  private readonly audioBucket: Bucket;
  /** Set on a xiaozhi channel: the dialect's own messages and its session (no device state, no resume). */
  private readonly xz: XiaozhiWire | null = null;
  /** Payload bytes handed to the socket, and how many of them the peer has shown it read (pongs to progress pings). */
  private sentBytes = 0;
  private readBytes = 0;
  private probeSeq = 0;
  private lastProbeAt = 0;
  /** Progress pings awaiting their pong: the payload and sentBytes when it went out. */
  private readonly probes: { tag: string; at: number }[] = [];

  constructor(
    readonly ws: WebSocket,
    readonly id: string,
    private readonly host: ConnectionHost,
    pathDeviceId: string | null,
    pathResume: string | undefined,
    /** The device ids this connection's token may claim (null: any). */
    private readonly claim: RegExp | null = null,
    xiaozhi: XiaozhiChannel | null = null,
  ) {
    const { cfg } = host;
    this.textBucket = new Bucket(cfg.textRatePerS, cfg.textBurst);
    this.audioBucket = new Bucket(cfg.audioRateBytesPerS, cfg.audioBurstBytes);
    ws.on('message', (data, isBinary) => this.onMessage(data as Buffer, isBinary));
    ws.on('ping', () => this.heard());
    ws.on('pong', (data) => this.onPong(data));
    ws.on('close', (code) => this.onClose(code));
    ws.on('error', (err) => host.log(`connection ${id}: ${err.message}`));
    this.keepaliveTimer = setInterval(() => this.keepalive(), cfg.keepaliveMs);
    this.idleTimer = setTimeout(() => this.close(CLOSE.TIMEOUT, 'idle'), host.idleTimeoutMs);
    if (xiaozhi) {
      this.deviceId = xiaozhi.deviceId;
      this.xz = new XiaozhiWire(
        {
          sendJson: (m) => this.sendJson(m),
          sendBinary: (b) => this.sendBinary(b),
          close: (c, r) => this.close(c, r),
          log: (l) => host.log(l),
        },
        xiaozhi.deviceId,
        xiaozhi.framing,
        cfg,
        host.metrics,
        () => host.sessionDone(),
      );
      this.helloTimer = setTimeout(() => this.close(CLOSE.TIMEOUT, 'hello timeout'), cfg.helloTimeoutMs);
    } else if (pathDeviceId !== null) {
      host.attach(this, pathDeviceId, pathResume);
    } else {
      this.helloTimer = setTimeout(() => this.close(CLOSE.TIMEOUT, 'hello timeout'), cfg.helloTimeoutMs);
    }
  }

  /** A conversation is in flight on this link (a drain waits for it to end). */
  get inFlight(): boolean {
    return this.xz ? this.xz.busy : !!this.state?.session?.active;
  }

  get open(): boolean {
    return !this.closing && this.ws.readyState === this.ws.OPEN;
  }

  /** Sends a JSON message; false when the socket is not open or was just cut as a slow reader. */
  sendJson(msg: object): boolean {
    if (!this.open) return false;
    const text = JSON.stringify(msg);
    if (!this.roomFor(text.length)) return false;
    this.ws.send(text);
    this.sent(text.length);
    this.host.metrics.msgOutText.inc();
    this.host.metrics.bytesOutText.inc(text.length);
    return true;
  }

  sendBinary(buf: Buffer): boolean {
    if (!this.open) return false;
    if (!this.roomFor(buf.length)) return false;
    this.ws.send(buf, { binary: true });
    this.sent(buf.length);
    this.host.metrics.msgOutBinary.inc();
    this.host.metrics.bytesOutBinary.inc(buf.length);
    return true;
  }

  close(code: number, reason: string): void {
    if (this.closing) return;
    this.closing = true;
    this.stopTimers();
    try {
      this.ws.close(code, reason);
    } catch {
      this.ws.terminate();
    }
    // A peer that never answers the close frame must not hold the socket forever.
    setTimeout(() => this.ws.terminate(), 2000).unref();
  }

  /** Called by the server when this link is superseded or the device state is done with it. */
  detach(): void {
    this.state = null;
  }

  /**
   * A peer that has not read maxUnackedBytes of what it was sent, or a socket whose own buffer is full, is a slow
   * reader: cut it rather than queue without bound. Node's bufferedAmount alone does not see the kernel's send buffer
   * (hundreds of KiB per socket on loopback), so reads are tracked by pongs: a pong to a ping sent after byte N means
   * the peer read past byte N.
   */
  private roomFor(n: number): boolean {
    const unread = this.sentBytes - this.readBytes;
    if (this.ws.bufferedAmount + n <= this.host.cfg.maxBufferedBytes && unread + n <= this.host.cfg.maxUnackedBytes)
      return true;
    this.host.metrics.slowReaders.inc();
    this.host.log(
      `connection ${this.id}: slow reader, ${unread} bytes sent and not read (${this.ws.bufferedAmount} unsent): cut`,
    );
    this.closing = true;
    this.stopTimers();
    this.ws.terminate();
    return false;
  }

  /** Counts bytes sent; every 16 KiB sent, a ping whose pong will say the peer read them. */
  private sent(n: number): void {
    this.sentBytes += n;
    if (this.sentBytes - this.lastProbeAt < PROBE_EVERY_BYTES || this.probes.length >= MAX_PROBES) return;
    const tag = `r${++this.probeSeq}`;
    this.lastProbeAt = this.sentBytes;
    this.probes.push({ tag, at: this.sentBytes });
    try {
      this.ws.ping(tag);
    } catch {
      /* closing */
    }
  }

  private onPong(data: Buffer): void {
    this.heard();
    if (!this.probes.length) return;
    const tag = data.toString();
    const i = this.probes.findIndex((p) => p.tag === tag);
    if (i < 0) return;
    this.readBytes = Math.max(this.readBytes, this.probes[i]!.at);
    this.probes.splice(0, i + 1);
  }

  private heard(): void {
    this.idleTimer.refresh();
  }

  private keepalive(): void {
    if (!this.open) return;
    // xiaozhi has no application heartbeat: a WebSocket ping only.
    if (!this.xz) this.sendJson({ type: 'ping', t: Date.now() });
    try {
      this.ws.ping();
    } catch {
      /* socket is closing */
    }
  }

  private stopTimers(): void {
    clearInterval(this.keepaliveTimer);
    clearTimeout(this.idleTimer);
    if (this.helloTimer) clearTimeout(this.helloTimer);
    this.helloTimer = null;
  }

  private onClose(code: number): void {
    this.closing = true;
    this.stopTimers();
    this.xz?.onClose();
    this.host.closed(this, code);
  }

  private error(code: ErrorCode, message: string): void {
    this.host.metrics.errors.labels(code).inc();
    this.sendJson({ type: 'error', code, message });
    if (++this.errorsInRow >= DEFAULTS.errors_in_a_row_limit) this.close(CLOSE.POLICY, 'too many errors');
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (this.closing) return;
    this.heard();
    const m = this.host.metrics;
    if (isBinary) {
      m.msgInBinary.inc();
      m.bytesInBinary.inc(data.length);
    } else {
      m.msgInText.inc();
      m.bytesInText.inc(data.length);
    }
    if (this.xz) return this.onXiaozhi(data, isBinary);
    // On /ws nothing but a hello may come first.
    if (this.deviceId === null) return this.beforeHello(data, isBinary);

    if (isBinary) return this.onAudio(data);
    if (!this.textBucket.take(1)) return this.error('rate_limited', 'too many messages; slow down');
    const parsed = parseDeviceMessage(data.toString('utf8'));
    if (!parsed.ok) return this.error(parsed.code, parsed.message);
    this.dispatch(parsed.msg);
  }

  /** A xiaozhi channel: the same rate limits, then the dialect's own handling (it closes on bad input: no error messages). */
  private onXiaozhi(data: Buffer, isBinary: boolean): void {
    const xz = this.xz!;
    if (isBinary) {
      if (!this.audioBucket.take(data.length)) return this.close(CLOSE.POLICY, 'audio faster than 4x real time');
      return xz.onBinary(data);
    }
    if (!this.textBucket.take(1)) return this.close(CLOSE.POLICY, 'too many messages');
    xz.onText(data.toString('utf8'));
    if (this.helloTimer && xz.greeted) {
      clearTimeout(this.helloTimer);
      this.helloTimer = null;
    }
  }

  private beforeHello(data: Buffer, isBinary: boolean): void {
    if (isBinary) return this.close(CLOSE.PROTOCOL_ERROR, 'hello expected before audio');
    const parsed = parseDeviceMessage(data.toString('utf8'));
    if (parsed.ok && parsed.msg.type === 'hello') {
      if (this.helloTimer) clearTimeout(this.helloTimer);
      this.helloTimer = null;
      this.errorsInRow = 0;
      if (this.claim && !this.claim.test(parsed.msg.device_id)) {
        this.host.metrics.rejected.labels('forbidden').inc();
        return this.close(CLOSE.POLICY, 'device id not allowed for this token');
      }
      this.host.attach(this, parsed.msg.device_id, parsed.msg.resume);
      return;
    }
    if (!parsed.ok && parsed.code === 'bad_message' && /"type":\s*"hello"/.test(data.toString('utf8'))) {
      return this.error('bad_message', parsed.message);
    }
    this.close(CLOSE.PROTOCOL_ERROR, 'hello expected first');
  }

  private onAudio(frame: Buffer): void {
    if (frame.length < MIN_AUDIO_FRAME_BYTES || frame.length > MAX_AUDIO_FRAME_BYTES || frame.length % 2 !== 0) {
      return this.error(
        'bad_audio',
        `audio frames must be an even count of ${MIN_AUDIO_FRAME_BYTES}-${MAX_AUDIO_FRAME_BYTES} bytes, got ${frame.length}`,
      );
    }
    if (!this.audioBucket.take(frame.length)) return this.error('rate_limited', 'audio faster than 4x real time');
    const session = this.state?.session;
    if (!session || session.ended) return this.error('no_session', 'audio with no active session');
    this.errorsInRow = 0;
    session.onAudio(frame);
  }

  private dispatch(msg: DeviceMessage): void {
    const state = this.state;
    if (!state) return;
    switch (msg.type) {
      case 'hello':
        return this.error('bad_message', 'already identified: hello is only for the first message on /ws');
      case 'ping':
        this.errorsInRow = 0;
        this.sendJson(msg.id === undefined ? { type: 'pong', t: msg.t } : { type: 'pong', id: msg.id, t: msg.t });
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
