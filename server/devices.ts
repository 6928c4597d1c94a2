// Server-side device state: one live link per device id, the resume token, the grace window, and the current session.
import { randomBytes } from 'node:crypto';
import { CLOSE, type ConnectedMsg } from '../core/protocol.ts';
import { loadReplies } from './audio.ts';
import type { ServerConfig } from './config.ts';
import type { ServerMetrics } from './metrics.ts';
import { Session, type SessionLink, type SessionSnapshot } from './session.ts';

let sessionCounter = 0;

/** What a device's state needs from the live link it is bound to (server/connection.ts implements it). */
export interface DeviceLink {
  readonly id: string;
  state: DeviceState | null;
  deviceId: string | null;
  sendJson(msg: object): boolean;
  sendBinary(buf: Buffer): boolean;
  /** Unbinds the link from its state without closing it. */
  detach(): void;
  close(code: number, reason: string): void;
}

export class DeviceState implements SessionLink {
  conn: DeviceLink | null = null;
  session: Session | null = null;
  resumeToken = randomBytes(18).toString('base64url');
  graceTimer: NodeJS.Timeout | null = null;

  constructor(
    readonly deviceId: string,
    private readonly cfg: ServerConfig,
    private readonly metrics: ServerMetrics,
    private readonly onSessionDone: () => void,
  ) {}

  sendJson(msg: object): boolean {
    return this.conn ? this.conn.sendJson(msg) : false;
  }

  sendBinary(buf: Buffer): boolean {
    return this.conn ? this.conn.sendBinary(buf) : false;
  }

  sessionDone(s: Session): void {
    // Keep an interrupted session until its resume can report it.
    if (this.session === s && !s.interruptedPending) this.session = null;
    this.onSessionDone();
  }

  /** A wake word: barge in on any active session, then start a new one. */
  wake(wakeId: string): void {
    const old = this.session;
    if (old && !old.ended) old.end('barged_in');
    const replies = loadReplies();
    const n = sessionCounter++;
    const id = `s-${n.toString(36)}-${randomBytes(3).toString('hex')}`;
    this.session = new Session(id, wakeId, replies[n % replies.length]!, this.cfg, this.metrics, this);
  }

  /** The link died (closed, cut, or replaced). */
  linkLost(): void {
    this.conn = null;
    this.session?.onLinkLost();
  }

  /** The state is abandoned: the grace window passed, or the device started over. */
  discardSession(): void {
    const s = this.session;
    this.session = null;
    s?.discard();
  }
}

/** A device's state as it moves between the server's workers (server/cluster.ts): its resume token and session. */
export interface DeviceSnapshot {
  resumeToken: string;
  session: SessionSnapshot | null;
}

/** All device states of one server (or of one worker of it), by device id. */
export class DeviceRegistry {
  readonly byId = new Map<string, DeviceState>();
  private connCounter = 0;

  constructor(
    private readonly cfg: ServerConfig,
    private readonly metrics: ServerMetrics,
    private readonly onSessionDone: () => void,
    /** Connection ids name the worker (c-w1-…) when the server has several. */
    private readonly idPrefix = 'c',
    /** A device's state expired here (its grace window passed): the cluster forgets where it lives. */
    private readonly onExpired: (deviceId: string) => void = () => {},
  ) {}

  nextConnectionId(): string {
    return `${this.idPrefix}-${(this.connCounter++).toString(36)}-${randomBytes(3).toString('hex')}`;
  }

  /** Ends a device's grace window and replaces its live link, if any (4409): a newer link takes the device. */
  private replaceLink(st: DeviceState): void {
    if (st.graceTimer) clearTimeout(st.graceTimer);
    st.graceTimer = null;
    const old = st.conn;
    if (!old) return;
    old.detach();
    st.linkLost();
    old.close(CLOSE.REPLACED, 'replaced');
  }

  /**
   * The device leaves this worker for another that holds its new link: a live link here is replaced (4409), and its
   * state goes with it. Null when this worker no longer holds it (its grace window passed).
   */
  release(deviceId: string): DeviceSnapshot | null {
    const st = this.byId.get(deviceId);
    if (!st) return null;
    this.replaceLink(st);
    this.byId.delete(deviceId);
    const session = st.session ? st.session.handOff(loadReplies()) : null;
    st.session = null;
    return { resumeToken: st.resumeToken, session };
  }

  /**
   * Binds a new link to a device id: replaces any live one (4409), resumes on a live token, else starts fresh.
   * `moved` is the device's state from the worker that held it until now.
   */
  attach(
    conn: DeviceLink,
    deviceId: string,
    resumeToken: string | undefined,
    moved: DeviceSnapshot | null = null,
  ): void {
    if (moved && !this.byId.has(deviceId)) {
      const st = new DeviceState(deviceId, this.cfg, this.metrics, this.onSessionDone);
      st.resumeToken = moved.resumeToken;
      if (moved.session) st.session = Session.restore(moved.session, loadReplies(), this.cfg, this.metrics, st);
      this.byId.set(deviceId, st);
    }
    let st = this.byId.get(deviceId);
    let resumed = false;
    if (st) {
      this.replaceLink(st);
      if (resumeToken !== undefined && resumeToken === st.resumeToken) {
        resumed = true;
      } else {
        st.discardSession();
        st.resumeToken = randomBytes(18).toString('base64url');
      }
    } else {
      st = new DeviceState(deviceId, this.cfg, this.metrics, this.onSessionDone);
      this.byId.set(deviceId, st);
    }
    if (resumeToken !== undefined) this.metrics.resumes.labels(resumed ? 'hit' : 'miss').inc();
    st.conn = conn;
    conn.state = st;
    conn.deviceId = deviceId;
    const s = resumed && st.session ? st.session : null;
    const connected: ConnectedMsg = {
      type: 'connected',
      status: 'connected',
      client_id: deviceId,
      connection_id: conn.id,
      resume_token: st.resumeToken,
      keepalive_ms: this.cfg.keepaliveMs,
      server_time: Date.now(),
      resumed,
      session: s ? { session_id: s.id, stage: s.publicStage } : null,
    };
    conn.sendJson(connected);
    if (s) {
      if (s.interruptedPending) st.session = null;
      s.onResumed(st);
    }
  }

  /** A link closed on its own: keep the state for the grace window, then drop it. */
  detach(conn: DeviceLink): void {
    const st = conn.state;
    if (!st || st.conn !== conn) return;
    conn.detach();
    st.linkLost();
    const expire = (): void => {
      st.graceTimer = null;
      if (st.conn) return;
      st.discardSession();
      this.byId.delete(st.deviceId);
      this.onExpired(st.deviceId);
    };
    if (this.cfg.resumeGraceMs === 0) expire();
    else st.graceTimer = setTimeout(expire, this.cfg.resumeGraceMs);
  }

  /** Shutdown: end every pending state now. */
  clear(): void {
    for (const st of this.byId.values()) {
      if (st.graceTimer) clearTimeout(st.graceTimer);
      st.discardSession();
    }
    this.byId.clear();
  }

  activeSessions(): number {
    let n = 0;
    for (const st of this.byId.values()) if (st.session && !st.session.ended) n++;
    return n;
  }
}
