// A device's link to the server: connect (path or hello), the handshake up to `connected`, keepalive pings, its own
// liveness check, noticing a close late when the firmware polls, and reconnecting with the profile's backoff. Every
// loss is counted here (planned or not, by close code and cause). What the link carries is the session's business:
// it hands `connected`, every other message and every binary frame to its owner (device-session.ts).
import { Backoff } from './backoff.ts';
import type { DeviceContext, SocketLike } from './device-env.ts';
import { Timers } from './device-env.ts';
import { closeCodeLabel, parseServerMessage, PROTOCOL_VERSION, type ConnectedMsg, type ServerMessage } from './protocol.ts';
import { RECONNECT_CENSOR_MS } from './verdict.ts';

/** 'unnoticed': the socket closed, but the firmware has not looked yet (a polled flag); not connected, not yet lost. */
export type LinkState = 'idle' | 'connecting' | 'handshaking' | 'connected' | 'unnoticed' | 'backoff' | 'closed' | 'gave_up' | 'stopped';

/** Why a link or a connect attempt ended (the `cause` tag of unplanned_drops; verdict.ts CAUSES says what each means). */
type LossCause = 'server_close' | 'abnormal' | 'liveness' | 'refused' | 'handshake' | 'timeout';

/** What the link tells the part of the device that uses it. */
export interface LinkOwner {
  /** `connected` arrived: the link is up (fresh, or resumed with the server's view of the session). */
  linkUp(msg: ConnectedMsg): void;
  /** The link, or a try at one, is gone. `final`: the device will not try again (closed for good, or gave up). */
  linkLost(wasConnected: boolean, final: boolean): void;
  /** A server message that is not the link's own (connected, ping, pong). */
  message(msg: ServerMessage): void;
  binary(buf: ArrayBuffer): void;
}

/** A link that lived less than this is a flap. */
const FLAP_MS = 2000;

/**
 * Lets go of a socket the device no longer wants. A socket still in its handshake is not closed but defused and
 * closed when (if) it opens: in k6 v2.2, close() on a CONNECTING WebSocket blocks the VU's JS thread until the
 * handshake ends, forever if it never does, and then k6 ignores maxDuration and never exits.
 */
function retire(ws: SocketLike, code?: number): void {
  ws.onmessage = null;
  ws.onclose = null;
  ws.onerror = null;
  if (ws.readyState === 0) {
    ws.onopen = () => {
      try {
        ws.close(code);
      } catch {
        /* gone meanwhile */
      }
    };
    return;
  }
  ws.onopen = null;
  try {
    ws.close(code);
  } catch {
    /* already closed */
  }
}

export class Link {
  state: LinkState = 'idle';
  /** Tries since the last loss (or since start). */
  attempt = 0;
  resumeToken: string | null = null;
  connectedAt = 0;
  private ws: SocketLike | null = null;
  private lastRx = 0;
  /** When the device noticed its link was gone (reconnect_time runs from here). */
  private lossNoticedAt: number | null = null;
  private pingSeq = 0;
  private pendingPing: { id: number; at: number } | null = null;
  /** When the current connect attempt began. */
  private attemptAt = 0;
  private readonly backoff: Backoff;
  private readonly timers: Timers<'connect' | 'keepalive' | 'liveness' | 'pong' | 'notice'>;

  constructor(private readonly ctx: DeviceContext, private readonly owner: LinkOwner) {
    this.backoff = new Backoff(ctx.profile.reconnect, ctx.env.random);
    this.timers = new Timers(ctx.env, ['connect', 'keepalive', 'liveness', 'pong', 'notice']);
  }

  /** Connected: the handshake is done and the socket open. */
  get up(): boolean {
    return this.state === 'connected' && this.ws !== null;
  }

  /** The device still means to be online (not stopped, not closed for good, not given up). */
  get alive(): boolean {
    return this.state !== 'stopped' && this.state !== 'gave_up' && this.state !== 'closed';
  }

  /** The open socket while connected, else null: the audio hot path sends on it directly. */
  get socket(): SocketLike | null {
    return this.state === 'connected' ? this.ws : null;
  }

  /** Sends on the open link; false when there is none. */
  send(data: string | ArrayBuffer): boolean {
    if (!this.up) return false;
    this.ws!.send(data);
    return true;
  }

  start(delayMs: number): void {
    this.state = 'backoff';
    this.timers.set('connect', () => this.connect(), delayMs);
  }

  /** Ends the link for good: timers cleared, socket closed with 1000, nothing counted as lost. */
  stop(): void {
    if (this.state === 'stopped') return;
    // A device still coming back: its wait so far, once long enough to judge; else it had no time.
    if (this.lossNoticedAt !== null && (this.state === 'backoff' || this.state === 'connecting' || this.state === 'handshaking')) {
      const waited = this.ctx.env.now() - this.lossNoticedAt;
      if (waited >= RECONNECT_CENSOR_MS) this.ctx.trend('reconnect_time', waited);
      else this.ctx.count('reconnects_unfinished');
    }
    this.state = 'stopped';
    this.timers.clearAll();
    const ws = this.ws;
    this.ws = null;
    if (ws) retire(ws, 1000);
  }

  // ---- connecting ----

  private connect(): void {
    if (!this.alive) return;
    const { env, opts } = this.ctx;
    const p = this.ctx.profile;
    if (this.attempt > 0 || this.lossNoticedAt !== null) this.ctx.count('reconnect_attempts');
    this.state = 'connecting';
    this.attemptAt = env.now();
    const resume = p.resume && this.resumeToken ? this.resumeToken : null;
    let url = p.connect === 'hello' ? `${opts.baseUrl}/ws` : `${opts.baseUrl}/ws/${encodeURIComponent(opts.id)}`;
    if (p.connect === 'path' && resume) url += `?resume=${encodeURIComponent(resume)}`;
    const headers: Record<string, string> = {};
    if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
    let ws: SocketLike;
    try {
      ws = env.openSocket(url, headers);
    } catch (e) {
      env.log?.(`${opts.id}: cannot open ${url}: ${String(e)}`);
      this.abandonSocket();
      this.afterLoss(1006, false, 'refused', env.now());
      return;
    }
    this.ws = ws;
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.state = 'handshaking';
      this.lastRx = env.now();
      if (p.connect === 'hello') {
        const hello: Record<string, unknown> = {
          type: 'hello',
          device_id: opts.id,
          protocol: PROTOCOL_VERSION,
          profile: p.name,
          audio: { encoding: 'pcm_s16le', sample_rate: 16000, channels: 1 },
        };
        if (resume) hello.resume = resume;
        ws.send(JSON.stringify(hello));
      }
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      this.lastRx = env.now();
      if (typeof ev.data === 'string') this.onText(ev.data);
      else this.owner.binary(ev.data as ArrayBuffer);
    };
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.linkEnded(typeof ev.code === 'number' && ev.code > 0 ? ev.code : 1006);
    };
    this.timers.set('connect', () => this.giveUpAttempt('connect timeout'), opts.connectTimeoutMs ?? 10_000);
  }

  private giveUpAttempt(why: string): void {
    if (this.state !== 'connecting' && this.state !== 'handshaking') return;
    this.ctx.env.log?.(`${this.ctx.opts.id}: ${why}`);
    this.abandonSocket();
    this.afterLoss(1006, false, 'timeout', this.ctx.env.now());
  }

  private onConnected(msg: ConnectedMsg): void {
    const now = this.ctx.env.now();
    this.timers.clear('connect');
    this.state = 'connected';
    this.ctx.count('links_up');
    this.connectedAt = now;
    this.resumeToken = msg.resume_token;
    this.ctx.env.metrics.add('connect_success', 1, this.ctx.outcomeTags(this.attemptAt, now));
    if (this.lossNoticedAt !== null) this.ctx.trend('reconnect_time', now - this.lossNoticedAt);
    this.lossNoticedAt = null;
    this.attempt = 0;
    this.backoff.reset();
    this.startKeepalive();
    this.owner.linkUp(msg);
  }

  // ---- losing it ----

  /** The socket closed (close event): the server closed it with `code`, or the TCP connection ended (1006). */
  private linkEnded(code: number): void {
    if (this.state === 'stopped') return;
    const at = this.ctx.env.now();
    const { detect, check_ms: notice } = this.ctx.profile.liveness;
    if (this.state !== 'connected') {
      // A try that never reached `connected`: refused before the socket opened, or closed during the handshake.
      const cause: LossCause = this.state === 'connecting' ? 'refused' : 'handshake';
      this.abandonSocket();
      this.afterLoss(code, false, cause, at);
      return;
    }
    const cause: LossCause = code === 1006 ? 'abnormal' : 'server_close';
    this.ctx.count('links_down');
    this.abandonSocket();
    if (detect === 'close' && notice > 0) {
      // Firmware that polls a flag only sees the close at its next check.
      const next = this.connectedAt + Math.ceil((at - this.connectedAt + 1) / notice) * notice;
      this.state = 'unnoticed';
      this.stopKeepalive();
      this.timers.set('notice', () => this.afterLoss(code, true, cause, at), next - at);
      return;
    }
    this.afterLoss(code, true, cause, at);
  }

  /** The device's own liveness check says the link is dead (half-open, silent server). */
  private declareDead(why: string): void {
    if (this.state !== 'connected') return;
    this.ctx.env.log?.(`${this.ctx.opts.id}: link dead (${why})`);
    this.ctx.count('links_down');
    this.abandonSocket();
    this.afterLoss(1006, true, 'liveness', this.ctx.env.now());
  }

  /**
   * A link (wasConnected) or a connect attempt ended at `at` for `cause`. Outside every fault window it is an
   * unplanned drop: the server's doing, or the firmware's. Then: closed for good, given up, or back off and retry.
   */
  private afterLoss(code: number, wasConnected: boolean, cause: LossCause, at: number): void {
    const { env } = this.ctx;
    const now = env.now();
    this.stopKeepalive();
    this.timers.clear('connect');
    const planned = env.planned?.(wasConnected ? at : this.attemptAt, at) ?? false;
    if (!planned) env.metrics.add('unplanned_drops', 1, { ...this.ctx.tags, code: closeCodeLabel(code), cause });
    if (wasConnected) {
      this.ctx.count('connection_drops', 1, { code: String(code) });
      if (now - this.connectedAt < FLAP_MS) this.ctx.count('flaps');
      this.lossNoticedAt = now;
      const died = env.linkDiedAt?.() ?? null;
      if (died !== null && died >= this.connectedAt && died <= now) this.ctx.trend('disconnect_detect_time', now - died);
    } else {
      // A try that never reached `connected` (refused, reset, 1013, timed out) is a failed connect.
      env.metrics.add('connect_success', 0, { ...this.ctx.chaosTags[planned ? 1 : 0], code: closeCodeLabel(code), cause });
    }
    const p = this.ctx.profile.reconnect;
    if (code === 1000 && p.on === 'abnormal') {
      this.state = 'closed';
      if (wasConnected) this.ctx.count('reconnects_abandoned');
      this.owner.linkLost(wasConnected, true);
      return;
    }
    this.attempt++;
    if (p.max_attempts > 0 && this.attempt > p.max_attempts) {
      this.state = 'gave_up';
      this.ctx.count('devices_gave_up');
      this.owner.linkLost(wasConnected, true);
      return;
    }
    this.state = 'backoff';
    this.owner.linkLost(wasConnected, false);
    this.timers.set('connect', () => this.connect(), this.backoff.next(this.attempt));
  }

  private abandonSocket(): void {
    const ws = this.ws;
    this.ws = null;
    if (ws) retire(ws);
  }

  // ---- keepalive and liveness ----

  private startKeepalive(): void {
    const p = this.ctx.profile;
    const { env } = this.ctx;
    if (p.keepalive.send !== 'none') {
      const tick = () => {
        if (this.state !== 'connected' || !this.ws) return;
        if (p.keepalive.send === 'ws-ping') this.ws.ping();
        else {
          const id = ++this.pingSeq;
          const at = env.now();
          this.ws.send(JSON.stringify({ type: 'ping', id, t: at }));
          if (p.liveness.detect === 'pong-timeout' && !this.pendingPing) {
            this.pendingPing = { id, at };
            this.timers.set('pong', () => this.declareDead(`no pong in ${p.liveness.timeout_ms} ms`), p.liveness.timeout_ms);
          } else if (!this.pendingPing) this.pendingPing = { id, at };
        }
        this.timers.set('keepalive', tick, p.keepalive.interval_ms);
      };
      this.timers.set('keepalive', tick, p.keepalive.interval_ms);
    }
    if (p.liveness.detect === 'silence') {
      const check = () => {
        if (this.state !== 'connected') return;
        if (env.now() - this.lastRx >= p.liveness.timeout_ms) return this.declareDead(`silent for ${p.liveness.timeout_ms} ms`);
        this.timers.set('liveness', check, p.liveness.check_ms || 1000);
      };
      this.timers.set('liveness', check, p.liveness.check_ms || 1000);
    }
  }

  private stopKeepalive(): void {
    this.timers.clear('keepalive');
    this.timers.clear('liveness');
    this.timers.clear('pong');
    this.pendingPing = null;
  }

  // ---- the link's own messages ----

  private onText(text: string): void {
    const msg = parseServerMessage(text);
    if (!msg) return;
    switch (msg.type) {
      case 'connected':
        return this.onConnected(msg);
      case 'ping':
        if (this.ctx.profile.keepalive.answer_server_pings && this.ws) this.ws.send(JSON.stringify({ type: 'pong', t: msg.t }));
        return;
      case 'pong': {
        const pp = this.pendingPing;
        if (pp && msg.id === pp.id) {
          this.ctx.trend('ping_rtt', this.ctx.env.now() - pp.at);
          this.pendingPing = null;
          this.timers.clear('pong');
        }
        return;
      }
      default:
        this.owner.message(msg);
    }
  }
}
