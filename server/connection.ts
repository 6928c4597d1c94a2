// One device WebSocket: the socket's side of a link (keepalive, idle and hello timeouts, the send-buffer bound and slow
// readers, metrics), with the protocol chosen at the upgrade (server/wire.ts): the wakestorm wire on /ws, the xiaozhi
// wire on /xiaozhi/v1/.
import type { WebSocket } from 'ws';
import { CLOSE } from '../core/protocol.ts';
import type { AudioFraming } from '../core/dialect.ts';
import type { ServerConfig } from './config.ts';
import type { DeviceLink, DeviceState } from './devices.ts';
import type { ServerMetrics } from './metrics.ts';
import { WakestormWire, type WakestormLink } from './wakestorm-wire.ts';
import { RateLimits, type Wire, type WireSocket } from './wire.ts';
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

/** How an admitted socket came in (server/admission.ts routes the upgrade). */
export interface ConnectionOptions {
  ws: WebSocket;
  id: string;
  host: ConnectionHost;
  /** The device id the upgrade path named (/ws/<id>), with its resume token; null: a hello will say. */
  pathDevice: { id: string; resume: string | undefined } | null;
  /** The device ids this connection's token may claim (null: any). */
  claim: RegExp | null;
  /** Set on /xiaozhi/v1/: that protocol instead of wakestorm's. */
  xiaozhi: XiaozhiChannel | null;
}

export class Connection implements DeviceLink, WakestormLink {
  /** Set once the device is identified; null again after it is replaced or closed. */
  state: DeviceState | null = null;
  deviceId: string | null = null;
  private closing = false;
  private helloTimer: NodeJS.Timeout | null = null;
  private keepaliveTimer: NodeJS.Timeout;
  private idleTimer: NodeJS.Timeout;
  /** The protocol on this socket, chosen at the upgrade. */
  private readonly wire: Wire;
  /** Payload bytes handed to the socket, and how many of them the peer has shown it read (pongs to progress pings). */
  private sentBytes = 0;
  private readBytes = 0;
  private probeSeq = 0;
  private lastProbeAt = 0;
  /** Progress pings awaiting their pong: the payload and sentBytes when it went out. */
  private readonly probes: { tag: string; at: number }[] = [];
  readonly ws: WebSocket;
  readonly id: string;
  private readonly host: ConnectionHost;

  constructor(o: ConnectionOptions) {
    const { ws, id, host } = o;
    this.ws = ws;
    this.id = id;
    this.host = host;
    const { cfg } = host;
    ws.on('message', (data, isBinary) => this.onMessage(data as Buffer, isBinary));
    ws.on('ping', () => this.heard());
    ws.on('pong', (data) => this.onPong(data));
    ws.on('close', (code) => this.onClose(code));
    ws.on('error', (err) => host.log(`connection ${id}: ${err.message}`));
    this.keepaliveTimer = setInterval(() => this.keepalive(), cfg.keepaliveMs);
    this.idleTimer = setTimeout(() => this.close(CLOSE.TIMEOUT, 'idle'), host.idleTimeoutMs);
    const sock: WireSocket = {
      sendJson: (m) => this.sendJson(m),
      sendBinary: (b) => this.sendBinary(b),
      close: (c, r) => this.close(c, r),
      log: (l) => host.log(l),
      greeted: () => this.stopHelloTimer(),
    };
    const limits = new RateLimits(cfg);
    if (o.xiaozhi) {
      this.deviceId = o.xiaozhi.deviceId;
      const { deviceId, framing } = o.xiaozhi;
      this.wire = new XiaozhiWire(sock, limits, deviceId, framing, cfg, host.metrics, () => host.sessionDone());
    } else {
      // The wire reads the device's id and state from this connection (server/devices.ts sets them on attach).
      this.wire = new WakestormWire(sock, this, limits, host.metrics, o.claim);
    }
    if (!o.xiaozhi && o.pathDevice) this.identify(o.pathDevice.id, o.pathDevice.resume);
    else this.helloTimer = setTimeout(() => this.close(CLOSE.TIMEOUT, 'hello timeout'), cfg.helloTimeoutMs);
  }

  /** The device said who it is (a hello on /ws): bind its state. */
  identify(deviceId: string, resumeToken: string | undefined): void {
    this.host.attach(this, deviceId, resumeToken);
  }

  /** A conversation is in flight on this link (a drain waits for it to end). */
  get inFlight(): boolean {
    return this.wire.busy;
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

  /** Cuts the socket without a close handshake (a peer that ignored the close frame). */
  terminate(): void {
    this.ws.terminate();
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
    this.wire.heartbeat();
    try {
      this.ws.ping();
    } catch {
      /* socket is closing */
    }
  }

  private stopTimers(): void {
    clearInterval(this.keepaliveTimer);
    clearTimeout(this.idleTimer);
    this.stopHelloTimer();
  }

  private stopHelloTimer(): void {
    if (this.helloTimer) clearTimeout(this.helloTimer);
    this.helloTimer = null;
  }

  private onClose(code: number): void {
    this.closing = true;
    this.stopTimers();
    this.wire.onClose();
    this.host.closed(this, code);
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (this.closing) return;
    this.heard();
    const m = this.host.metrics;
    if (isBinary) {
      m.msgInBinary.inc();
      m.bytesInBinary.inc(data.length);
      this.wire.onBinary(data);
    } else {
      m.msgInText.inc();
      m.bytesInText.inc(data.length);
      this.wire.onText(data.toString('utf8'));
    }
  }
}
