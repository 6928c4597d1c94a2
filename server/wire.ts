// One protocol on a device's socket. server/connection.ts holds the socket (keepalive, idle and hello timeouts, slow
// readers, metrics) and hands each message to the wire chosen at the upgrade: WakestormWire on /ws (docs/protocol.md)
// or XiaozhiWire on /xiaozhi/v1/ (xiaozhi-esp32's protocol). A wire owns its protocol's parsing, rate limits, errors
// and sessions; it talks back through its WireSocket.
import type { ServerConfig } from './config.ts';

/** What a wire needs from its socket. */
export interface WireSocket {
  sendJson(msg: object): boolean;
  sendBinary(buf: Buffer): boolean;
  close(code: number, reason: string): void;
  log(line: string): void;
  /** The device identified itself: the hello timeout stops. */
  greeted(): void;
}

export interface Wire {
  onText(text: string): void;
  onBinary(data: Buffer): void;
  /** The protocol's own heartbeat, sent beside the socket's WebSocket ping (xiaozhi has none). */
  heartbeat(): void;
  /** A conversation is in flight: a drain waits for it to end. */
  readonly busy: boolean;
  /** The socket is gone. */
  onClose(): void;
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

/** The per-connection limits every wire applies (how it answers a breach is the protocol's). */
export class RateLimits {
  readonly text: Bucket;
  readonly audio: Bucket;
  constructor(cfg: ServerConfig) {
    this.text = new Bucket(cfg.textRatePerS, cfg.textBurst);
    this.audio = new Bucket(cfg.audioRateBytesPerS, cfg.audioBurstBytes);
  }
}
