// A virtual voice device: a state machine that connects, keeps alive, notices dead links, reconnects, resumes, wakes,
// speaks and plays back, reporting metrics. Socket, clock, timers, randomness and metrics come in as arguments, so the
// same code runs in k6 (k6-adapter.ts) and under node:test.
import { Backoff } from './backoff.ts';
import type { DeviceMetricName, MetricSink } from './metric-names.ts';
import type { Profile } from './profiles.ts';
import { closeCodeLabel, DEFAULTS, isDropped, parseServerMessage, PCM_BYTES_PER_MS, type ServerMessage, type SessionEndReason } from './protocol.ts';
import { expInterval } from './rng.ts';
import { RECONNECT_CENSOR_MS, WAKE_ACK_TIMEOUT_MS } from './verdict.ts';

/** The browser-like socket both k6/websockets and the Node adapter provide. */
export interface SocketLike {
  /** 0 connecting, 1 open, 2 closing, 3 closed. */
  readonly readyState: number;
  binaryType: string;
  onopen: ((ev?: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string | ArrayBuffer | ArrayBufferView): void;
  ping(): void;
  close(code?: number, reason?: string): void;
}

export type TimerHandle = unknown;

/** Uplink audio prepared once per process (k6: per VU) and shared by its devices. */
export interface AudioFrames {
  /** The utterance cut into frames of one size, plus which frames are silent to an energy VAD. */
  frames(frameBytes: number): { speech: ArrayBuffer[]; silent: boolean[]; silence: ArrayBuffer };
}

export interface DeviceEnv {
  openSocket(url: string, headers: Record<string, string>): SocketLike;
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(h: TimerHandle): void;
  random(): number;
  metrics: MetricSink;
  audio: AudioFrames;
  /** When the network really failed (chaos runs know it); null when unknown. */
  linkDiedAt?(): number | null;
  /** True when [from, to] overlaps a fault window of the timeline (plus grace): what happened then was planned. */
  planned?(from: number, to: number): boolean;
  log?(line: string): void;
}

export interface WakeSchedule {
  /** 'poisson': exponential gaps with mean interval_ms; 'fixed': every interval_ms; 'once': one wake; 'off'. */
  mode: 'poisson' | 'fixed' | 'once' | 'off';
  interval_ms: number;
  /** The first wake comes uniformly within [first_min_ms, first_max_ms] after start. */
  first_min_ms: number;
  first_max_ms: number;
}

export interface DeviceOptions {
  id: string;
  /** ws:// base, e.g. ws://127.0.0.1:18000 */
  baseUrl: string;
  token?: string;
  profile: Profile;
  wake: WakeSchedule;
  /** Give up a connection attempt that has not reached `connected` after this long. */
  connectTimeoutMs?: number;
}

/** 'unnoticed': the socket closed, but the firmware has not looked yet (a polled flag); not connected, not yet lost. */
export type DeviceState = 'idle' | 'connecting' | 'handshaking' | 'connected' | 'unnoticed' | 'backoff' | 'closed' | 'gave_up' | 'stopped';

interface ActiveSession {
  wakeId: string;
  wakeAt: number;
  id: string | null;
  eosAt: number | null;
  responseRecorded: boolean;
  /** Stage as far as the device knows. */
  stage: 'waking' | 'listening' | 'thinking' | 'speaking';
  frame: number;
  silenceRunMs: number;
  silenceSentMs: number;
  streamT0: number;
  /** Playback model: bytes received, when playback (re)started, total expected. */
  pbReceived: number;
  pbStartedAt: number | null;
}

/** Why a link or a connect attempt ended (the `cause` tag of unplanned_drops; verdict.ts CAUSES says what each means). */
type LossCause = 'server_close' | 'abnormal' | 'liveness' | 'refused' | 'handshake' | 'timeout';

/** The server's VAD ends speech after this much silence (the protocol's number). */
const VAD_SILENCE_MS = DEFAULTS.vad_silence_ms;
const VAD_MAX_TRAILING_MS = 2000;
const FLAP_MS = 2000;

let wakeCounter = 0;

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

const PROFILE_TAGS = new Map<string, Record<string, string>>();
const CHAOS_TAGS = new Map<string, [Record<string, string>, Record<string, string>]>();

export class Device {
  state: DeviceState = 'idle';
  /** Tries since the last loss (or since start). */
  attempt = 0;
  resumeToken: string | null = null;
  connectedAt = 0;
  private ws: SocketLike | null = null;
  private lastRx = 0;
  private lossNoticedAt: number | null = null;
  private session: ActiveSession | null = null;
  private pendingWake: { wakeId: string; at: number } | null = null;
  private pingSeq = 0;
  /** When the current connect attempt began. */
  private attemptAt = 0;
  /** Uplink frames sent since the fleet last asked (takeFramesSent). */
  private framesSent = 0;
  /** The wake waiting for its acknowledgement (wake_success). */
  private wakeJudge: { wakeId: string; at: number } | null = null;
  private readonly chaosTags: [Record<string, string>, Record<string, string>];
  private pendingPing: { id: number; at: number } | null = null;
  private readonly backoff: Backoff;
  private readonly tags: Record<string, string>;
  private readonly t: Record<'connect' | 'keepalive' | 'liveness' | 'pong' | 'wake' | 'wakeAck' | 'audio' | 'playback' | 'notice', TimerHandle | null> = {
    connect: null,
    wakeAck: null,
    keepalive: null,
    liveness: null,
    pong: null,
    wake: null,
    audio: null,
    playback: null,
    notice: null,
  };

  constructor(readonly opts: DeviceOptions, private readonly env: DeviceEnv) {
    this.backoff = new Backoff(opts.profile.reconnect, env.random);
    // One tags object per profile, shared by its devices (metrics only read it).
    this.tags = PROFILE_TAGS.get(opts.profile.name) ?? PROFILE_TAGS.set(opts.profile.name, { profile: opts.profile.name }).get(opts.profile.name)!;
    const name = opts.profile.name;
    this.chaosTags = CHAOS_TAGS.get(name) ?? CHAOS_TAGS.set(name, [{ profile: name, chaos: 'off' }, { profile: name, chaos: 'on' }]).get(name)!;
  }

  /** Uplink frames sent since the last call (the fleet reports them as audio_frames once a second). */
  takeFramesSent(): number {
    const n = this.framesSent;
    this.framesSent = 0;
    return n;
  }

  /** Profile and chaos:on|off tags for an outcome spanning [from, to]. */
  private outcomeTags(from: number, to: number): Record<string, string> {
    return this.chaosTags[this.env.planned?.(from, to) ? 1 : 0];
  }

  get profile(): Profile {
    return this.opts.profile;
  }

  get connected(): boolean {
    return this.state === 'connected';
  }

  /** Starts the device after `delayMs` (the fleet spreads connects over a ramp). */
  start(delayMs = 0): void {
    this.state = 'backoff';
    this.timer('connect', () => this.connect(), delayMs);
    this.scheduleFirstWake(delayMs);
  }

  /** Ends the device for good: timers cleared, socket closed with 1000, nothing counted as lost. */
  stop(): void {
    if (this.state === 'stopped') return;
    // A device still coming back: its wait so far, once long enough to judge; else it had no time.
    if (this.lossNoticedAt !== null && (this.state === 'backoff' || this.state === 'connecting' || this.state === 'handshaking')) {
      const waited = this.env.now() - this.lossNoticedAt;
      if (waited >= RECONNECT_CENSOR_MS) this.trend('reconnect_time', waited);
      else this.count('reconnects_unfinished');
    }
    this.state = 'stopped';
    for (const k of Object.keys(this.t) as (keyof Device['t'])[]) this.clear(k);
    const ws = this.ws;
    this.ws = null;
    if (ws) retire(ws, 1000);
  }

  // ---- connection ----

  private connect(): void {
    if (this.state === 'stopped' || this.state === 'gave_up') return;
    const p = this.profile;
    if (this.attempt > 0 || this.lossNoticedAt !== null) this.count('reconnect_attempts');
    this.state = 'connecting';
    this.attemptAt = this.env.now();
    const resume = p.resume && this.resumeToken ? this.resumeToken : null;
    let url = p.connect === 'hello' ? `${this.opts.baseUrl}/ws` : `${this.opts.baseUrl}/ws/${encodeURIComponent(this.opts.id)}`;
    if (p.connect === 'path' && resume) url += `?resume=${encodeURIComponent(resume)}`;
    const headers: Record<string, string> = {};
    if (this.opts.token) headers.Authorization = `Bearer ${this.opts.token}`;
    let ws: SocketLike;
    try {
      ws = this.env.openSocket(url, headers);
    } catch (e) {
      this.env.log?.(`${this.opts.id}: cannot open ${url}: ${String(e)}`);
      this.abandonSocket();
      this.afterLoss(1006, false, 'refused', this.env.now());
      return;
    }
    this.ws = ws;
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.state = 'handshaking';
      this.lastRx = this.env.now();
      if (p.connect === 'hello') {
        const hello: Record<string, unknown> = {
          type: 'hello',
          device_id: this.opts.id,
          protocol: 1,
          profile: p.name,
          audio: { encoding: 'pcm_s16le', sample_rate: 16000, channels: 1 },
        };
        if (resume) hello.resume = resume;
        ws.send(JSON.stringify(hello));
      }
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      this.lastRx = this.env.now();
      if (typeof ev.data === 'string') this.onText(ev.data);
      else this.onBinary(ev.data as ArrayBuffer);
    };
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.linkEnded(typeof ev.code === 'number' && ev.code > 0 ? ev.code : 1006);
    };
    this.timer('connect', () => this.giveUpAttempt('connect timeout'), this.opts.connectTimeoutMs ?? 10_000);
  }

  private giveUpAttempt(why: string): void {
    if (this.state !== 'connecting' && this.state !== 'handshaking') return;
    this.env.log?.(`${this.opts.id}: ${why}`);
    this.abandonSocket();
    this.afterLoss(1006, false, 'timeout', this.env.now());
  }

  private onConnected(msg: Extract<ServerMessage, { type: 'connected' }>): void {
    const now = this.env.now();
    this.clear('connect');
    this.state = 'connected';
    this.count('links_up');
    this.connectedAt = now;
    this.resumeToken = msg.resume_token;
    this.env.metrics.add('connect_success', 1, this.outcomeTags(this.attemptAt, now));
    if (this.lossNoticedAt !== null) this.trend('reconnect_time', now - this.lossNoticedAt);
    this.lossNoticedAt = null;
    this.attempt = 0;
    this.backoff.reset();

    const s = this.session;
    if (s) {
      if (msg.resumed && msg.session && msg.session.session_id === s.id) {
        this.count('sessions_resumed');
        // The server replays the reply from its start (or ends an interrupted turn): reset the playback model.
        s.pbReceived = 0;
        s.pbStartedAt = null;
        s.stage = msg.session.stage === 'listening' ? 'listening' : msg.session.stage;
      } else if (s.id !== null) {
        this.sessionOver('lost');
      } else {
        // The wake never reached the server: send it again on this link.
        this.pendingWake = { wakeId: s.wakeId, at: s.wakeAt };
        this.session = null;
      }
    }
    this.startKeepalive();
    if (this.pendingWake && !this.session) this.sendWake(this.pendingWake.wakeId, this.pendingWake.at);
    this.pendingWake = null;
  }

  /** The socket closed (close event): the server closed it with `code`, or the TCP connection ended (1006). */
  private linkEnded(code: number): void {
    if (this.state === 'stopped') return;
    const at = this.env.now();
    const { detect, check_ms: notice } = this.profile.liveness;
    if (this.state !== 'connected') {
      // A try that never reached `connected`: refused before the socket opened, or closed during the handshake.
      const cause: LossCause = this.state === 'connecting' ? 'refused' : 'handshake';
      this.abandonSocket();
      this.afterLoss(code, false, cause, at);
      return;
    }
    const cause: LossCause = code === 1006 ? 'abnormal' : 'server_close';
    this.count('links_down');
    if (detect === 'close' && notice > 0) {
      // Firmware that polls a flag only sees the close at its next check.
      const next = this.connectedAt + Math.ceil((at - this.connectedAt + 1) / notice) * notice;
      this.abandonSocket();
      this.state = 'unnoticed';
      this.stopKeepalive();
      this.stopAudio();
      this.timer('notice', () => this.afterLoss(code, true, cause, at), next - at);
      return;
    }
    this.abandonSocket();
    this.afterLoss(code, true, cause, at);
  }

  /** The device's own liveness check says the link is dead (half-open, silent server). */
  private declareDead(why: string): void {
    if (this.state !== 'connected') return;
    this.env.log?.(`${this.opts.id}: link dead (${why})`);
    this.count('links_down');
    this.abandonSocket();
    this.afterLoss(1006, true, 'liveness', this.env.now());
  }

  /**
   * A link (wasConnected) or a connect attempt ended at `at` for `cause`. Outside every fault window it is an
   * unplanned drop: the server's doing, or the firmware's.
   */
  private afterLoss(code: number, wasConnected: boolean, cause: LossCause, at: number): void {
    const now = this.env.now();
    this.stopKeepalive();
    this.stopAudio();
    this.clear('connect');
    const planned = this.env.planned?.(wasConnected ? at : this.attemptAt, at) ?? false;
    if (!planned) this.env.metrics.add('unplanned_drops', 1, { ...this.tags, code: closeCodeLabel(code), cause });
    if (wasConnected) {
      this.count('connection_drops', 1, { code: String(code) });
      if (now - this.connectedAt < FLAP_MS) this.count('flaps');
      this.lossNoticedAt = now;
      const died = this.env.linkDiedAt?.() ?? null;
      if (died !== null && died >= this.connectedAt && died <= now) this.trend('disconnect_detect_time', now - died);
      if (this.session && !this.profile.resume) this.sessionOver('lost');
    }
    // A try that never reached `connected` (refused, reset, 1013, timed out) is a failed connect.
    if (!wasConnected) this.env.metrics.add('connect_success', 0, { ...this.chaosTags[planned ? 1 : 0], code: closeCodeLabel(code), cause });
    const p = this.profile.reconnect;
    if (code === 1000 && p.on === 'abnormal') {
      this.state = 'closed';
      if (wasConnected) this.count('reconnects_abandoned');
      if (this.session) this.sessionOver('lost');
      return;
    }
    this.attempt++;
    if (p.max_attempts > 0 && this.attempt > p.max_attempts) {
      this.state = 'gave_up';
      this.count('devices_gave_up');
      if (this.session) this.sessionOver('lost');
      this.clear('wake');
      return;
    }
    this.state = 'backoff';
    this.timer('connect', () => this.connect(), this.backoff.next(this.attempt));
  }

  private abandonSocket(): void {
    const ws = this.ws;
    this.ws = null;
    if (ws) retire(ws);
  }

  // ---- keepalive and liveness ----

  private startKeepalive(): void {
    const p = this.profile;
    if (p.keepalive.send !== 'none') {
      const tick = () => {
        if (this.state !== 'connected' || !this.ws) return;
        if (p.keepalive.send === 'ws-ping') this.ws.ping();
        else {
          const id = ++this.pingSeq;
          const at = this.env.now();
          this.ws.send(JSON.stringify({ type: 'ping', id, t: at }));
          if (p.liveness.detect === 'pong-timeout' && !this.pendingPing) {
            this.pendingPing = { id, at };
            this.timer('pong', () => this.declareDead(`no pong in ${p.liveness.timeout_ms} ms`), p.liveness.timeout_ms);
          } else if (!this.pendingPing) this.pendingPing = { id, at };
        }
        this.timer('keepalive', tick, p.keepalive.interval_ms);
      };
      this.timer('keepalive', tick, p.keepalive.interval_ms);
    }
    if (p.liveness.detect === 'silence') {
      const check = () => {
        if (this.state !== 'connected') return;
        if (this.env.now() - this.lastRx >= p.liveness.timeout_ms) return this.declareDead(`silent for ${p.liveness.timeout_ms} ms`);
        this.timer('liveness', check, p.liveness.check_ms || 1000);
      };
      this.timer('liveness', check, p.liveness.check_ms || 1000);
    }
  }

  private stopKeepalive(): void {
    this.clear('keepalive');
    this.clear('liveness');
    this.clear('pong');
    this.pendingPing = null;
  }

  // ---- messages ----

  private onText(text: string): void {
    const msg = parseServerMessage(text);
    if (!msg) return;
    const s = this.session;
    switch (msg.type) {
      case 'connected':
        return this.onConnected(msg);
      case 'ping':
        if (this.profile.keepalive.answer_server_pings && this.ws) this.ws.send(JSON.stringify({ type: 'pong', t: msg.t }));
        return;
      case 'pong': {
        const pp = this.pendingPing;
        if (pp && msg.id === pp.id) {
          this.trend('ping_rtt', this.env.now() - pp.at);
          this.pendingPing = null;
          this.clear('pong');
        }
        return;
      }
      case 'session_started':
        if (s && s.id === null && msg.wake_id === s.wakeId) {
          s.id = msg.session_id;
          s.stage = 'listening';
          this.trend('wake_ack_latency', this.env.now() - s.wakeAt);
          this.wakeJudged(s.wakeId, true);
          this.count('sessions_started');
          this.startAudio();
        }
        return;
      case 'transcript':
        if (s && msg.session_id === s.id) {
          if (s.stage === 'listening' && s.eosAt === null) s.eosAt = this.env.now();
          if (s.stage === 'listening') s.stage = 'thinking';
          this.stopAudio();
        }
        return;
      case 'tts_stream_start':
        if (s && msg.session_id === s.id) {
          s.stage = 'speaking';
          s.pbReceived = 0;
          s.pbStartedAt = null;
          this.clear('playback');
        }
        return;
      case 'tts_stream_end':
        if (s && msg.session_id === s.id) this.schedulePlaybackComplete(s);
        return;
      case 'session_end':
        if (s && msg.session_id === s.id) this.sessionOver(msg.reason);
        return;
      case 'error':
        this.count('protocol_errors', 1, { code: msg.code });
        return;
      default:
        return;
    }
  }

  private onBinary(buf: ArrayBuffer): void {
    const s = this.session;
    if (!s || s.stage !== 'speaking') return;
    const now = this.env.now();
    if (!s.responseRecorded && s.eosAt !== null) {
      this.trend('response_latency', now - s.eosAt);
      s.responseRecorded = true;
    }
    // Jitter buffer drained at real time: if playback already consumed everything, this chunk comes after an underrun.
    const prebuffer = this.profile.playback_prebuffer_ms * PCM_BYTES_PER_MS;
    if (s.pbStartedAt === null) {
      s.pbReceived += buf.byteLength;
      if (s.pbReceived >= prebuffer) s.pbStartedAt = now;
      return;
    }
    const playedBytes = (now - s.pbStartedAt) * PCM_BYTES_PER_MS;
    if (playedBytes > s.pbReceived) {
      this.count('playback_underruns');
      s.pbStartedAt = now - s.pbReceived / PCM_BYTES_PER_MS; // resume playing from where it ran dry, now
    }
    s.pbReceived += buf.byteLength;
  }

  private schedulePlaybackComplete(s: ActiveSession): void {
    const now = this.env.now();
    if (s.pbStartedAt === null) s.pbStartedAt = now;
    const remaining = Math.max(0, s.pbReceived / PCM_BYTES_PER_MS - (now - s.pbStartedAt));
    this.timer(
      'playback',
      () => {
        if (this.session === s && s.id && this.ws && this.state === 'connected') this.ws.send(JSON.stringify({ type: 'playback_complete', session_id: s.id }));
      },
      remaining,
    );
  }

  private sessionOver(reason: SessionEndReason | 'lost'): void {
    const s = this.session;
    this.session = null;
    this.stopAudio();
    this.clear('playback');
    if (!s || s.id === null) return;
    if (reason === 'complete') this.count('sessions_completed');
    const dropped = isDropped(reason);
    if (dropped) this.count('sessions_dropped', 1, { reason });
    this.env.metrics.add('session_drop_rate', dropped ? 1 : 0, this.tags);
    if (this.opts.wake.mode === 'poisson' || this.opts.wake.mode === 'fixed') this.scheduleNextWake();
  }

  // ---- voice ----

  private scheduleFirstWake(delayMs: number): void {
    const w = this.opts.wake;
    if (w.mode === 'off') return;
    const first = delayMs + w.first_min_ms + this.env.random() * Math.max(0, w.first_max_ms - w.first_min_ms);
    this.timer('wake', () => this.wakeNow(), first);
  }

  private scheduleNextWake(): void {
    const w = this.opts.wake;
    const gap = w.mode === 'poisson' ? expInterval(w.interval_ms, this.env.random) : w.interval_ms;
    this.timer('wake', () => this.wakeNow(), gap);
  }

  private wakeNow(): void {
    if (this.state === 'stopped' || this.state === 'gave_up' || this.state === 'closed') return;
    if (this.session) {
      // The user is mid-turn: a real user does not say the wake word again. Try later.
      if (this.opts.wake.mode !== 'once') this.scheduleNextWake();
      return;
    }
    this.count('wakes');
    const wakeId = `w-${(wakeCounter++).toString(36)}-${this.opts.id}`.slice(0, 64);
    const at = this.env.now();
    // A wake still waiting offline is replaced by this one: the user's earlier wake word went unanswered.
    if (this.wakeJudge) this.wakeJudged(this.wakeJudge.wakeId, false);
    this.wakeJudge = { wakeId, at };
    this.timer('wakeAck', () => this.wakeJudged(wakeId, false), WAKE_ACK_TIMEOUT_MS);
    if (this.state === 'connected') this.sendWake(wakeId, at);
    else this.pendingWake = { wakeId, at };
  }

  /** A wake is judged once: acknowledged in time (1) or not (0), tagged chaos:on when a fault window overlapped it. */
  private wakeJudged(wakeId: string, ok: boolean): void {
    const w = this.wakeJudge;
    if (!w || w.wakeId !== wakeId) return;
    this.wakeJudge = null;
    this.clear('wakeAck');
    const now = this.env.now();
    this.env.metrics.add('wake_success', ok ? 1 : 0, this.outcomeTags(w.at, ok ? now : w.at + WAKE_ACK_TIMEOUT_MS));
  }

  private sendWake(wakeId: string, at: number): void {
    if (!this.ws) return;
    this.session = {
      wakeId,
      wakeAt: at,
      id: null,
      eosAt: null,
      responseRecorded: false,
      stage: 'waking',
      frame: 0,
      silenceRunMs: 0,
      silenceSentMs: 0,
      streamT0: 0,
      pbReceived: 0,
      pbStartedAt: null,
    };
    this.ws.send(JSON.stringify({ type: 'hotword_detected', wake_id: wakeId, t: at }));
  }

  /** Streams the utterance at real-time pace in the profile's frame size, then ends speech its way. */
  private startAudio(): void {
    const s = this.session;
    if (!s) return;
    // The hot path of a big fleet (one call per 20 ms frame per talking device): everything that does not change
    // during the stream is read once here, and the step is its own timer callback: one closure per stream, not two per frame.
    const env = this.env;
    const timers = this.t;
    const { speech, silent, silence } = env.audio.frames(this.profile.frame_bytes);
    const frameMs = this.profile.frame_bytes / PCM_BYTES_PER_MS;
    const explicitEos = this.profile.end_of_speech === 'explicit';
    const slipAfter = 3 * frameMs;
    s.streamT0 = env.now();
    s.frame = 0;
    const step = () => {
      timers.audio = null;
      const ws = this.ws;
      if (this.session !== s || s.stage !== 'listening' || !ws || this.state !== 'connected') return;
      const now = env.now();
      const i = s.frame;
      if (i < speech.length) {
        ws.send(speech[i]!);
        this.framesSent++;
        s.silenceRunMs = silent[i] ? s.silenceRunMs + frameMs : 0;
      } else if (explicitEos) {
        ws.send(JSON.stringify({ type: 'end_of_speech', session_id: s.id }));
        s.eosAt = now;
        s.stage = 'thinking';
        return;
      } else {
        if (s.silenceSentMs >= VAD_MAX_TRAILING_MS) return; // the server should have ended speech long ago
        ws.send(silence);
        this.framesSent++;
        s.silenceSentMs += frameMs;
        s.silenceRunMs += frameMs;
      }
      // The server's VAD ends speech on this frame: that is the end of speech, as the server sees it.
      if (!explicitEos && s.eosAt === null && s.silenceRunMs >= VAD_SILENCE_MS) s.eosAt = now;
      s.frame = i + 1;
      let due = s.streamT0 + s.frame * frameMs;
      // A microphone does not burst: when the event loop ran late, the stream slips instead of catching up at once
      // (a burst would exceed the server's audio rate limit and make the generator's lag look like a device fault).
      if (now - due > slipAfter) {
        s.streamT0 = now - s.frame * frameMs;
        due = now;
        this.count('audio_slips');
      }
      timers.audio = env.setTimeout(step, due > now ? due - now : 0);
    };
    step();
  }

  private stopAudio(): void {
    this.clear('audio');
  }

  // ---- plumbing ----

  private timer(name: keyof Device['t'], fn: () => void, ms: number): void {
    this.clear(name);
    this.t[name] = this.env.setTimeout(() => {
      this.t[name] = null;
      fn();
    }, ms);
  }

  private clear(name: keyof Device['t']): void {
    const h = this.t[name];
    if (h !== null) this.env.clearTimeout(h);
    this.t[name] = null;
  }

  private count(name: DeviceMetricName, n = 1, extra?: Record<string, string>): void {
    this.env.metrics.add(name, n, extra ? { ...this.tags, ...extra } : this.tags);
  }

  private trend(name: DeviceMetricName, v: number): void {
    this.env.metrics.add(name, v, this.tags);
  }
}
