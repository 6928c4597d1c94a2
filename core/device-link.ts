// A device's link to the server: connect (path or hello, as the dialect says them), the handshake up to the dialect's
// `ready`, keepalive pings, its own liveness check, noticing a close late when the firmware polls, and reconnecting
// with the profile's backoff (a persistent link), or opening a channel per wake and closing it after the reply
// (per_wake). Every loss is counted here (planned or not, by close code and cause). What the link carries is the
// session's business: it hands every other message and every binary frame to its owner (device-session.ts).
import { nextPoll, subprotocolProblem, violationKeepsLink } from './device-rules.ts';
import { Backoff } from './backoff.ts';
import type { DeviceContext, FirstFrameProbe, SocketLike } from './device-env.ts';
import { connectRequest, provisionRequest, Timers } from './device-env.ts';
import {
  answerOf,
  capture,
  matches,
  render,
  renderAnswer,
  stepOf,
  UNMATCHED_NOTE,
  VIOLATION_NOTE,
  unmatchedType,
  type Provision,
} from './dialect.ts';
import { CLOSE, closeCodeLabel } from './protocol.ts';
import { RECONNECT_CENSOR_MS } from './verdict.ts';

/** 'unnoticed': the socket closed, but the firmware has not looked yet (a polled flag); not connected, not yet lost. */
export type LinkState =
  'idle' | 'connecting' | 'handshaking' | 'connected' | 'unnoticed' | 'backoff' | 'closed' | 'gave_up' | 'stopped';

/** Why a link or a connect attempt ended (the `cause` tag of unplanned_drops; verdict.ts CAUSES says what each means). */
type LossCause =
  'server_close' | 'abnormal' | 'liveness' | 'refused' | 'handshake' | 'timeout' | 'violation' | 'provision';

/**
 * What a device accepts from a server, per message and per second; past a bound the device counts a
 * protocol_violations{kind} and closes the link (a firmware would): whatever a server sends, the tester stays bounded.
 * The text bound is the protocol's 64 KiB; a binary frame of 1 MiB is xiaozhi-esp32-server's own message cap; no
 * dialect nests JSON deeper than 32 levels; 1,000 messages a second is ten times a reply streamed in 20 ms frames plus
 * its control messages.
 */
export const INTAKE = {
  textBytes: 64 * 1024,
  binaryBytes: 1024 * 1024,
  jsonDepth: 32,
  messagesPerSecond: 1000,
  /**
   * What a link may hold unsent (queued past the socket) before the device calls it a server that stopped reading
   * (server_not_reading) and drops the link: about half a minute of 16 kHz PCM uplink on top of the kernel's own
   * buffer. The native engine's socket bound is the same number (engine/ws.go maxWriteBuffer; a start that says
   * otherwise is refused).
   */
  unsentBytes: 1024 * 1024,
};
/** The k6 device reads how much it holds unsent every this many uplink frames (a property read per frame costs). */
export const UNSENT_CHECK_FRAMES = 64;
export const VIOLATION_KINDS = [
  'text_too_long',
  'frame_too_big',
  'json_too_deep',
  'invalid_utf8',
  'bad_frame',
  'flood',
  'reply_overrun',
  'reply_too_long',
  'not_json',
  'binary_outside_session',
  'unrequested_subprotocol',
  'missing_subprotocol',
  'server_not_reading',
] as const;
export type ViolationKind = (typeof VIOLATION_KINDS)[number];

/** Nesting depth of a JSON text, counted on its brackets outside strings (before parsing it). */
function jsonDepth(text: string, limit: number): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92) i++;
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 || c === 91) {
      if (++depth > max) max = depth;
      if (max > limit) return max;
    } else if (c === 125 || c === 93) depth--;
  }
  return max;
}

/** What the link tells the part of the device that uses it. */
export interface LinkOwner {
  /** The dialect's `ready` arrived: the link is up (its captures, a resumed session among them, are in the vars). */
  linkUp(): void;
  /** The link, or a try at one, is gone. `final`: the device will not try again (closed for good, or gave up). */
  linkLost(wasConnected: boolean, final: boolean): void;
  /** A server message that is not the link's own (ready, ping, pong); false when no step took it. */
  message(msg: object): boolean;
  binary(buf: ArrayBuffer): void;
  /** A conversation is in flight (a per-wake channel the server closes between conversations is no loss). */
  busy(): boolean;
}

/** Unmatched types and violation kinds already shown in this process (each is shown once). */
const SEEN_UNMATCHED = new Set<string>();
const SEEN_VIOLATIONS = new Set<string>();
/** Connect errors shown so far, by their text with numbers taken out (ports, addresses): a few kinds per process. */
const SEEN_CONNECT_ERRORS = new Set<string>();
const CONNECT_ERRORS_SHOWN = 4;
/** The text of a socket's error event (k6 puts it in `error`, a browser in `message`). */
const errorText = (ev: unknown): string => {
  const e = ev as { error?: unknown; message?: unknown } | null;
  const v = e?.error ?? e?.message;
  return typeof v === 'string' ? v : v instanceof Error ? v.message : '';
};

/**
 * Where the socket library can drop a server's first frame (env.firstFrameProbe: k6/websockets lost it on 4 of 87,678
 * opens with GOGC=1, docs/engine.md), a device whose server speaks first pings at open. A server that sent its ready
 * on the upgrade wrote it before it read the ping, and frames arrive in order: a pong with no message before it, and
 * none this long after it, means the library dropped the ready. The device then reopens at once, once per connect and
 * within the VU's budget (FirstFrameProbe): tester_retries, not a failed connect. A server whose ready comes later
 * than its pong (after an await) looks the same to this probe: the first ready seen after a pong disarms it.
 */
export const FIRST_FRAME_GRACE_MS = 250;

/** A link that lived less than this is a flap. */
export const FLAP_MS = 2000;

/**
 * Keepalive and silence-check timers fire at the end of a slot of this grid, shared by every device of a process: a ping
 * a few milliseconds late is nothing against its period of seconds, and devices whose timers fall in one slot share
 * one wake-up of the generator (10,000 devices pinging every 15 s: ~670 wake-ups a second become at most 100; the
 * device engine's CPU at 10,000 idle devices fell by a quarter, BENCHMARKS.md). Timers that time what a user hears
 * (audio frames, playback, barge-in), the pong timeout (a bound the server is judged by, and a timer that is
 * cancelled, not fired, when the server is well) and the reconnect backoff keep their exact time.
 */
export const KEEPALIVE_GRID_MS = 10;

/**
 * Lets go of a socket the device no longer wants. A socket still in its handshake is not closed but defused and
 * closed when (if) it opens: in k6 v2.2, close() on a CONNECTING WebSocket blocks the VU's JS thread until the
 * handshake ends, forever if it never does, and then k6 ignores maxDuration and never exits.
 */
function retire(ws: SocketLike, code?: number): void {
  ws.onmessage = null;
  ws.onclose = null;
  ws.onerror = null;
  ws.onpong = null;
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
  /** The close code of the last link lost (1006 for a cut), and when: a resume after it may be owed. */
  lastLoss: { code: number; at: number } | null = null;
  private ws: SocketLike | null = null;
  private lastRx = 0;
  /** When the device noticed its link was gone (reconnect_time runs from here). */
  private lossNoticedAt: number | null = null;
  private pingSeq = 0;
  /** Messages received in the current one-second window (bounded intake). */
  private rxWindowAt = 0;
  private rxInWindow = 0;
  private pendingPing: { id: number; at: number } | null = null;
  /** When the current connect attempt began, and when its socket opened. */
  private attemptAt = 0;
  private openedAt = 0;
  private readonly backoff: Backoff;
  /** This connect already reopened once for a frame the socket library dropped (FIRST_FRAME_GRACE_MS). */
  private reopenedForDrop = false;
  /** The dialect's provision call has answered (a 'boot' provision is made once). */
  private provisioned = false;
  /** The provision call in flight; an answer for an older one is ignored. */
  private provisionSeq = 0;
  private readonly timers: Timers<'connect' | 'keepalive' | 'liveness' | 'pong' | 'notice' | 'probe'>;

  constructor(
    private readonly ctx: DeviceContext,
    private readonly owner: LinkOwner,
  ) {
    this.backoff = new Backoff(ctx.profile.reconnect, ctx.env.random);
    this.timers = new Timers(ctx.env, ['connect', 'keepalive', 'liveness', 'pong', 'notice', 'probe']);
  }

  /** A channel per wake (the dialect's lifecycle), not one link for the device's life. */
  get perWake(): boolean {
    return this.ctx.dialect.lifecycle === 'per_wake';
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

  /** A persistent link connects after `delayMs`; a per-wake one waits for the first wake (open()). */
  start(delayMs: number): void {
    if (this.perWake) {
      this.state = 'idle';
      return;
    }
    this.state = 'backoff';
    this.timers.set('connect', () => this.connect(), delayMs);
  }

  /** Opens a per-wake channel (the wake word was heard); nothing when one is open or opening. */
  open(): void {
    if (this.state === 'idle') this.connect();
  }

  /** Closes a per-wake channel after its conversation (1000): a planned end, not a loss. */
  close(): void {
    if (!this.perWake || this.state === 'stopped' || this.state === 'idle') return;
    if (this.state === 'connected') this.ctx.count('links_down');
    this.stopKeepalive();
    this.timers.clear('connect');
    this.timers.clear('notice');
    const ws = this.ws;
    this.ws = null;
    if (ws) retire(ws, 1000);
    this.state = 'idle';
  }

  /** Ends the link for good: timers cleared, socket closed with 1000, nothing counted as lost. */
  stop(): void {
    if (this.state === 'stopped') return;
    // A device still coming back: its wait so far, once long enough to judge; else it had no time.
    if (
      this.lossNoticedAt !== null &&
      (this.state === 'backoff' || this.state === 'connecting' || this.state === 'handshaking')
    ) {
      const waited = this.ctx.env.now() - this.lossNoticedAt;
      if (waited >= RECONNECT_CENSOR_MS)
        this.ctx.trendSpan('reconnect_time', this.lossNoticedAt, this.lossNoticedAt + waited);
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
    const { env } = this.ctx;
    const d = this.ctx.dialect;
    if (!this.perWake && (this.attempt > 0 || this.lossNoticedAt !== null)) this.ctx.count('reconnect_attempts');
    this.state = 'connecting';
    this.attemptAt = env.now();
    const pv = d.provision;
    if (pv && (pv.when === 'connect' || !this.provisioned)) return this.provision(pv);
    this.openSocket();
  }

  /**
   * The firmware's HTTP call before its socket (the dialect's provision): timed (provision_latency), its answer's
   * captures kept (the socket's URL, a token), then the socket. A status other than 2xx, an answer that is no JSON
   * object, no answer within the connect timeout: a failed connect (cause provision, code the HTTP status or 1006).
   */
  private provision(pv: Provision): void {
    const { env, opts, vars } = this.ctx;
    const seq = ++this.provisionSeq;
    const req = provisionRequest(pv, vars, opts.provisionUrl ?? opts.baseUrl.replace(/^ws/, 'http'));
    const sentAt = env.now();
    const failed = (code: number, why: string) => {
      env.log?.(`${opts.id}: provision ${pv.method} ${pv.path} failed: ${why}`);
      this.afterLoss(code, false, 'provision', env.now());
    };
    this.timers.set(
      'connect',
      () => {
        if (seq !== this.provisionSeq || this.state !== 'connecting') return;
        this.provisionSeq++;
        failed(1006, `no answer in ${opts.connectTimeoutMs ?? 10_000} ms`);
      },
      opts.connectTimeoutMs ?? 10_000,
    );
    if (!env.request) return failed(1006, 'this device has no HTTP client');
    env.request(req, (res) => {
      if (seq !== this.provisionSeq || this.state !== 'connecting' || !this.alive) return;
      this.timers.clear('connect');
      const now = env.now();
      this.ctx.trend('provision_latency', now - sentAt);
      if ('error' in res) return failed(1006, res.error);
      if (res.status < 200 || res.status > 299) return failed(res.status, `HTTP ${res.status}`);
      let answer: unknown;
      try {
        answer = JSON.parse(res.body);
      } catch {
        answer = null;
      }
      if (answer === null || typeof answer !== 'object' || Array.isArray(answer))
        return failed(1006, 'the answer is not a JSON object');
      capture(pv.capture, answer, vars);
      this.provisioned = true;
      this.attemptAt = now;
      this.openSocket();
    });
  }

  private openSocket(): void {
    const { env, opts, vars } = this.ctx;
    const d = this.ctx.dialect;
    const p = this.ctx.profile;
    vars.resume_token = d.resume && p.resume && this.resumeToken ? this.resumeToken : undefined;
    const { url, headers, name, byHello } = connectRequest(d, p, vars, opts.baseUrl);
    let ws: SocketLike;
    try {
      ws = env.openSocket(url, headers, name);
    } catch (e) {
      env.log?.(`${opts.id}: cannot open ${url}: ${String(e)}`);
      this.abandonSocket();
      this.afterLoss(1006, false, 'refused', env.now());
      return;
    }
    this.ws = ws;
    ws.binaryType = 'arraybuffer';
    // The first-frame probe (FIRST_FRAME_GRACE_MS): only where the server speaks first and the library can drop it.
    let heard = false;
    let pongFirst = false;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.state = 'handshaking';
      this.openedAt = this.lastRx = env.now();
      this.ctx.trend('connect_time', this.openedAt - this.attemptAt);
      // A subprotocol the device did not ask for, or none where it asked for one: the connect fails (RFC 6455 §4.1).
      const wrong = subprotocolProblem(headers, ws.protocol ?? '');
      if (wrong) return this.violation(wrong);
      const p = env.firstFrameProbe;
      if (byHello && d.send.hello) ws.send(render(d.send.hello, vars));
      // A dialect with no ready message: the link is up when the socket opens (after its hello, if any).
      if (d.recv.ready === null) this.onReady({});
      else if (!(byHello && d.send.hello) && p?.armed) {
        p.opened();
        ws.onpong = () => {
          if (ws !== this.ws || heard || pongFirst) return;
          pongFirst = true;
          if (!this.reopenedForDrop && p.armed)
            this.timers.set('probe', () => this.reopenForDroppedFrame(p), FIRST_FRAME_GRACE_MS);
        };
        ws.ping();
      }
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      if (!heard) {
        heard = true;
        this.timers.clear('probe');
        // pongFirst is only ever set on a probed socket, so the env has its probe.
        if (pongFirst && env.firstFrameProbe?.armed) {
          // This server's first frame follows its pong: the probe cannot tell a drop from it here.
          env.firstFrameProbe.armed = false;
          env.log?.(`${opts.id}: the server's first frame came after its pong; the first-frame probe is off`);
        }
      }
      const now = env.now();
      this.lastRx = now;
      // Bounded intake: a flood, an oversized frame, a text too long.
      if (now - this.rxWindowAt >= 1000) {
        this.rxWindowAt = now;
        this.rxInWindow = 0;
      }
      if (++this.rxInWindow > INTAKE.messagesPerSecond) return this.violation('flood');
      if (typeof ev.data === 'string') {
        if (ev.data.length > INTAKE.textBytes) return this.violation('text_too_long');
        // k6 hands a text frame over decoded, each invalid UTF-8 sequence replaced by U+FFFD: a replacement character
        // is how invalid UTF-8 shows here (no protocol has reason to send U+FFFD itself).
        if (ev.data.indexOf('\uFFFD') !== -1) return this.violation('invalid_utf8');
        this.onText(ev.data);
      } else {
        if ((ev.data as ArrayBuffer).byteLength > INTAKE.binaryBytes) return this.violation('frame_too_big');
        this.owner.binary(ev.data as ArrayBuffer);
      }
    };
    let errored = false;
    ws.onerror = (ev) => {
      errored = true;
      if (ws === this.ws && this.state === 'connecting') this.connectFailed(errorText(ev));
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      const coded = typeof ev.code === 'number' && ev.code > 0;
      // A close with no code and no error before it, on a socket that had opened, is one the tester's own WebSocket
      // library made: the server's frame broke the framing (a reserved opcode or bit, a bad length), which k6 does not
      // report as an error. A connect that fails (refused, reset) comes with an error and no code: the network's 1006.
      // So does a stream a network fault mangled (a sliced or cut frame): during a fault it is the network's, not the
      // server's (seen once in flaky-wifi).
      const opened = this.state === 'handshaking' || this.state === 'connected';
      if (!coded && !errored && opened && this.ctx.phaseOf(env.now(), env.now()) === 'steady')
        return this.violation('bad_frame');
      this.linkEnded(coded ? ev.code! : 1006);
    };
    this.timers.set('connect', () => this.giveUpAttempt('connect timeout'), opts.connectTimeoutMs ?? 10_000);
  }

  /**
   * The server broke the protocol in a way a device cannot take (too much, too big, too deep): counted with its kind,
   * shown once, and the link closed by the device. k6 lets a client close only with 1000 or 3000-4999, so the close
   * code stays the device's ordinary 1000; the kind says why.
   */
  violation(kind: ViolationKind): void {
    const now = this.ctx.env.now();
    this.ctx.outcome('protocol_violations', 1, now, now, { kind });
    const kept = violationKeepsLink(kind);
    if (!SEEN_VIOLATIONS.has(kind)) {
      SEEN_VIOLATIONS.add(kind);
      this.ctx.env.warn?.(
        `${VIOLATION_NOTE}${kind}: the server broke the protocol (${this.ctx.dialect.name}); ${kept ? 'the device ignores the message' : 'the device closes the link'}`,
      );
    }
    // A message the device cannot use but can skip: counted, the link kept (DEVICE_RULES.noted_violations).
    if (kept || this.state === 'stopped' || !this.ws) return;
    const wasConnected = this.state === 'connected';
    if (wasConnected) this.ctx.count('links_down');
    this.abandonSocket();
    // As a protocol error (1002): the device reconnects as after any abnormal end.
    this.afterLoss(CLOSE.PROTOCOL_ERROR, wasConnected, 'violation', now);
  }

  /** The socket library dropped the server's first frame (FIRST_FRAME_GRACE_MS): open again now, the tester's retry. */
  private reopenForDroppedFrame(probe: FirstFrameProbe): void {
    if (this.state !== 'handshaking') return;
    this.reopenedForDrop = true;
    // Past the VU's budget the silent open is the server's to answer for: the connect timeout judges it.
    if (!probe.takeReopen()) return;
    this.ctx.count('tester_retries');
    if (!probe.shown) {
      probe.shown = true;
      this.ctx.env.warn?.(
        `wakestorm-tester-retry ${this.ctx.opts.id}: the server answered a ping but its first frame never reached the ` +
          'device (k6/websockets drops a frame read before its open event); reopened at once, not counted against the server',
      );
    }
    this.abandonSocket();
    this.connect();
  }

  private giveUpAttempt(why: string): void {
    if (this.state !== 'connecting' && this.state !== 'handshaking') return;
    this.ctx.env.log?.(`${this.ctx.opts.id}: ${why}`);
    this.connectFailed(
      `${why} (${this.state === 'connecting' ? 'the socket never opened' : 'the socket opened, no ready message'})`,
    );
    this.abandonSocket();
    this.afterLoss(1006, false, 'timeout', this.ctx.env.now());
  }

  private onReady(msg: object): void {
    const now = this.ctx.env.now();
    const { vars } = this.ctx;
    capture(this.ctx.dialect.capture.ready, msg, vars);
    this.timers.clear('connect');
    this.reopenedForDrop = false;
    this.state = 'connected';
    this.ctx.count('links_up');
    this.ctx.trend('handshake_time', now - this.openedAt);
    this.connectedAt = now;
    this.resumeToken = typeof vars.resume_token === 'string' ? vars.resume_token : null;
    this.ctx.outcome('connect_success', 1, this.attemptAt, now);
    // Tagged with its phase: a reconnect after a loss in steady state is the server's to answer for; one that spanned
    // a fault is the fault's and the firmware's backoff (judged as recovery, and as firmware findings).
    if (this.lossNoticedAt !== null) this.ctx.trendSpan('reconnect_time', this.lossNoticedAt, now);
    this.lossNoticedAt = null;
    this.attempt = 0;
    this.backoff.reset();
    this.startKeepalive();
    this.owner.linkUp();
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
    if (this.perWake && !this.owner.busy() && code === CLOSE.NORMAL) {
      // The server closed a per-wake channel between conversations (xiaozhi's no-voice close): how such a channel
      // ends, not a loss. Any other end (1006, an error code) is a lost link even with no conversation on it.
      this.stopKeepalive();
      this.state = 'idle';
      this.owner.linkLost(true, false);
      return;
    }
    if (detect === 'close' && notice > 0) {
      // Firmware that polls a flag only sees the close at its next check.
      const next = nextPoll(this.connectedAt, at, notice);
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
    if (this.perWake && !this.owner.busy()) {
      // A per-wake channel with no conversation on it timed out (xiaozhi: 120 s with nothing received while
      // listening): the firmware closes it and goes idle. Not a loss.
      this.ctx.env.log?.(`${this.ctx.opts.id}: channel closed by the device (${why})`);
      this.close();
      this.owner.linkLost(true, false);
      return;
    }
    this.ctx.env.log?.(`${this.ctx.opts.id}: link dead (${why})`);
    this.ctx.count('links_down');
    this.abandonSocket();
    this.afterLoss(1006, true, 'liveness', this.ctx.env.now());
  }

  /**
   * A link (wasConnected) or a connect attempt ended at `at` for `cause`. A link lost outside every fault window is an
   * unplanned drop (the server's doing, or the firmware's); a connect that failed is a failed connect (connect_success)
   * and nothing else: one cause fails one SLO. Then: closed for good, given up, or back off and retry.
   */
  private afterLoss(code: number, wasConnected: boolean, cause: LossCause, at: number): void {
    const { env } = this.ctx;
    const now = env.now();
    this.stopKeepalive();
    this.timers.clear('connect');
    const from = wasConnected ? at : this.attemptAt;
    const closed = { code: closeCodeLabel(code), cause };
    if (wasConnected) this.ctx.outcome('unplanned_drops', 1, from, at, closed);
    if (wasConnected) {
      this.lastLoss = { code, at: now };
      this.ctx.count('connection_drops', 1, { code: closeCodeLabel(code) });
      if (now - this.connectedAt < FLAP_MS) this.ctx.count('flaps');
      if (!this.perWake) this.lossNoticedAt = now;
      const died = env.linkDiedAt?.() ?? null;
      if (died !== null && died >= this.connectedAt && died <= now)
        this.ctx.trend('disconnect_detect_time', now - died);
    } else {
      // A try that never reached `connected` (refused, reset, 1013, timed out) is a failed connect.
      this.ctx.outcome('connect_success', 0, from, at, closed);
    }
    if (this.perWake) {
      // A per-wake channel is not reconnected: the conversation on it is lost, the next wake opens a new one. It owes
      // no reconnect (what it owes is that the next wake connects: connect_success, wake_success).
      if (wasConnected) this.ctx.count('reconnects_abandoned');
      this.state = 'idle';
      this.owner.linkLost(wasConnected, false);
      return;
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
    this.timers.clear('probe');
    const ws = this.ws;
    this.ws = null;
    if (ws) retire(ws);
  }

  // ---- keepalive and liveness ----

  private startKeepalive(): void {
    const p = this.ctx.profile;
    const { env } = this.ctx;
    const ping = this.ctx.dialect.send.ping;
    if (p.keepalive.send !== 'none') {
      const tick = () => {
        if (this.state !== 'connected' || !this.ws) return;
        if (p.keepalive.send === 'ws-ping') this.ws.ping();
        else if (ping) {
          const id = ++this.pingSeq;
          const at = env.now();
          this.ctx.vars.ping_id = id;
          this.ctx.vars.now = at;
          this.ws.send(render(ping, this.ctx.vars));
          if (p.liveness.detect === 'pong-timeout' && !this.pendingPing) {
            this.pendingPing = { id, at };
            this.timers.set(
              'pong',
              () => this.declareDead(`no pong in ${p.liveness.timeout_ms} ms`),
              p.liveness.timeout_ms,
            );
          } else if (!this.pendingPing) this.pendingPing = { id, at };
        }
        this.keepaliveTimer('keepalive', tick, p.keepalive.interval_ms);
      };
      this.keepaliveTimer('keepalive', tick, p.keepalive.interval_ms);
    }
    if (p.liveness.detect === 'silence') {
      const check = () => {
        if (this.state !== 'connected') return;
        if (env.now() - this.lastRx >= p.liveness.timeout_ms)
          return this.declareDead(`silent for ${p.liveness.timeout_ms} ms`);
        this.keepaliveTimer('liveness', check, p.liveness.check_ms || 1000);
      };
      this.keepaliveTimer('liveness', check, p.liveness.check_ms || 1000);
    }
  }

  /** Sets a keepalive or silence-check timer, due at the end of its KEEPALIVE_GRID_MS slot. */
  private keepaliveTimer(name: 'keepalive' | 'liveness', fn: () => void, ms: number): void {
    const now = this.ctx.env.now();
    this.timers.set(name, fn, Math.ceil((now + ms) / KEEPALIVE_GRID_MS) * KEEPALIVE_GRID_MS - now);
  }

  private stopKeepalive(): void {
    this.timers.clear('keepalive');
    this.timers.clear('liveness');
    this.timers.clear('pong');
    this.pendingPing = null;
  }

  // ---- the link's own messages ----

  private onText(text: string): void {
    if (text.length > 2 * INTAKE.jsonDepth && jsonDepth(text, INTAKE.jsonDepth) > INTAKE.jsonDepth)
      return this.violation('json_too_deep');
    let msg: unknown;
    try {
      msg = JSON.parse(text);
    } catch {
      return this.violation('not_json');
    }
    // Only objects are messages, as engine/device.go reads them.
    if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) return this.violation('not_json');
    const { recv, send, capture: cap } = this.ctx.dialect;
    const { vars } = this.ctx;
    if (this.state === 'handshaking' && recv.ready && matches(recv.ready, msg, vars)) return this.onReady(msg);
    if (recv.ping && matches(recv.ping, msg, vars)) {
      capture(cap.ping, msg, vars);
      if (this.ctx.profile.keepalive.answer_server_pings && send.pong && this.ws) this.ws.send(render(send.pong, vars));
      return;
    }
    if (recv.pong && matches(recv.pong, msg, vars)) {
      capture(cap.pong, msg, vars);
      const pp = this.pendingPing;
      // A pong that carries an id answers the ping with that id; one with none answers the oldest outstanding ping.
      const id = vars.pong_id;
      if (pp && (id === undefined || id === null || String(id) === String(pp.id))) {
        this.ctx.trend('ping_rtt', this.ctx.env.now() - pp.at);
        this.pendingPing = null;
        this.timers.clear('pong');
      }
      return;
    }
    // A request the server expects an answer to (xiaozhi's MCP initialize, tools/list): answered at once.
    const answer = answerOf(this.ctx.dialect, msg, vars);
    if (answer) {
      this.ws?.send(renderAnswer(answer, msg, vars));
      return;
    }
    if (!this.owner.message(msg) && stepOf(this.ctx.dialect, msg, vars) === null) this.unmatched(msg);
  }

  /** Why a connect failed, in the socket library's words (refused, reset, a bad handshake), shown for a few kinds. */
  private connectFailed(text: string): void {
    const kind = text.replace(/[0-9]+/g, '#');
    if (!text || SEEN_CONNECT_ERRORS.has(kind) || SEEN_CONNECT_ERRORS.size >= CONNECT_ERRORS_SHOWN) return;
    SEEN_CONNECT_ERRORS.add(kind);
    const at = this.ctx.env.now() - this.attemptAt;
    this.ctx.env.warn?.(`wakestorm-connect-failed ${this.ctx.opts.id} after ${at} ms: ${text}`);
  }

  /** A server message no step of the dialect matches: counted by its type (bounded), and shown once per type. */
  private unmatched(msg: object): void {
    const type = unmatchedType(msg, this.ctx.dialect);
    this.ctx.count('unmatched_messages', 1, { type });
    if (!SEEN_UNMATCHED.has(type)) {
      SEEN_UNMATCHED.add(type);
      const text = JSON.stringify(msg);
      const shown = text.length > 160 ? `${text.slice(0, 160)}…` : text;
      this.ctx.env.warn?.(
        `${UNMATCHED_NOTE}${type} (dialect ${this.ctx.dialect.name} matches no step of it): ${shown}`,
      );
    }
  }
}
