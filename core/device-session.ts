// A device's conversations: the wake schedule, the wake sent (or held until the link is up), its acknowledgement
// judged, the utterance streamed at real-time pace, the end of speech, the reply played back through a jitter-buffer
// model, and how each session ended. It speaks through the link (device-link.ts) and hears from it.
import type { DeviceContext } from './device-env.ts';
import { Timers } from './device-env.ts';
import type { Link, LinkOwner } from './device-link.ts';
import { DEFAULTS, isDropped, PCM_BYTES_PER_MS, type ConnectedMsg, type ServerMessage, type SessionEndReason } from './protocol.ts';
import { expInterval } from './rng.ts';
import { WAKE_ACK_TIMEOUT_MS } from './verdict.ts';

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
  /** Playback model: bytes received, when playback (re)started. */
  pbReceived: number;
  pbStartedAt: number | null;
}

/** The server's VAD ends speech after this much silence (the protocol's number). */
const VAD_SILENCE_MS = DEFAULTS.vad_silence_ms;
/** Trailing silence a VAD-ended stream sends at most: the server should have ended speech long before. */
const VAD_MAX_TRAILING_MS = 2000;

let wakeCounter = 0;

export class Conversation implements LinkOwner {
  private session: ActiveSession | null = null;
  private pendingWake: { wakeId: string; at: number } | null = null;
  /** The wake waiting for its acknowledgement (wake_success). */
  private wakeJudge: { wakeId: string; at: number } | null = null;
  /** Uplink frames sent since the fleet last asked (takeFramesSent). */
  private framesSent = 0;
  private link: Link | null = null;
  private readonly timers: Timers<'wake' | 'wakeAck' | 'audio' | 'playback'>;

  constructor(private readonly ctx: DeviceContext) {
    this.timers = new Timers(ctx.env, ['wake', 'wakeAck', 'audio', 'playback']);
  }

  /** The link this conversation speaks over (set once, by the device that owns both). */
  attach(link: Link): void {
    this.link = link;
  }

  start(delayMs: number): void {
    const w = this.ctx.opts.wake;
    if (w.mode === 'off') return;
    const first = delayMs + w.first_min_ms + this.ctx.env.random() * Math.max(0, w.first_max_ms - w.first_min_ms);
    this.timers.set('wake', () => this.wakeNow(), first);
  }

  stop(): void {
    this.timers.clearAll();
  }

  /** Uplink frames sent since the last call (the fleet reports them as audio_frames once a second). */
  takeFramesSent(): number {
    const n = this.framesSent;
    this.framesSent = 0;
    return n;
  }

  // ---- what the link reports ----

  linkUp(msg: ConnectedMsg): void {
    const s = this.session;
    if (s) {
      if (msg.resumed && msg.session && msg.session.session_id === s.id) {
        this.ctx.count('sessions_resumed');
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
    if (this.pendingWake && !this.session) this.sendWake(this.pendingWake.wakeId, this.pendingWake.at);
    this.pendingWake = null;
  }

  linkLost(wasConnected: boolean, final: boolean): void {
    this.timers.clear('audio');
    // A session survives a lost link only where the profile resumes and the device will come back.
    if (this.session && (final || (wasConnected && !this.ctx.profile.resume))) this.sessionOver('lost');
    if (final) this.timers.clear('wake');
  }

  message(msg: ServerMessage): void {
    const s = this.session;
    switch (msg.type) {
      case 'session_started':
        if (s && s.id === null && msg.wake_id === s.wakeId) {
          s.id = msg.session_id;
          s.stage = 'listening';
          this.ctx.trend('wake_ack_latency', this.ctx.env.now() - s.wakeAt);
          this.wakeJudged(s.wakeId, true);
          this.ctx.count('sessions_started');
          this.startAudio();
        }
        return;
      case 'transcript':
        if (s && msg.session_id === s.id) {
          if (s.stage === 'listening' && s.eosAt === null) s.eosAt = this.ctx.env.now();
          if (s.stage === 'listening') s.stage = 'thinking';
          this.timers.clear('audio');
        }
        return;
      case 'tts_stream_start':
        if (s && msg.session_id === s.id) {
          s.stage = 'speaking';
          s.pbReceived = 0;
          s.pbStartedAt = null;
          this.timers.clear('playback');
        }
        return;
      case 'tts_stream_end':
        if (s && msg.session_id === s.id) this.schedulePlaybackComplete(s);
        return;
      case 'session_end':
        if (s && msg.session_id === s.id) this.sessionOver(msg.reason);
        return;
      case 'error':
        this.ctx.count('protocol_errors', 1, { code: msg.code });
        return;
      default:
        return;
    }
  }

  /** Reply audio: the first chunk after the end of speech is the response latency; playback is modelled in real time. */
  binary(buf: ArrayBuffer): void {
    const s = this.session;
    if (!s || s.stage !== 'speaking') return;
    const now = this.ctx.env.now();
    if (!s.responseRecorded && s.eosAt !== null) {
      this.ctx.trend('response_latency', now - s.eosAt);
      s.responseRecorded = true;
    }
    // Jitter buffer drained at real time: if playback already consumed everything, this chunk comes after an underrun.
    const prebuffer = this.ctx.profile.playback_prebuffer_ms * PCM_BYTES_PER_MS;
    if (s.pbStartedAt === null) {
      s.pbReceived += buf.byteLength;
      if (s.pbReceived >= prebuffer) s.pbStartedAt = now;
      return;
    }
    const playedBytes = (now - s.pbStartedAt) * PCM_BYTES_PER_MS;
    if (playedBytes > s.pbReceived) {
      this.ctx.count('playback_underruns');
      s.pbStartedAt = now - s.pbReceived / PCM_BYTES_PER_MS; // resume playing from where it ran dry, now
    }
    s.pbReceived += buf.byteLength;
  }

  // ---- sessions ----

  private schedulePlaybackComplete(s: ActiveSession): void {
    const now = this.ctx.env.now();
    if (s.pbStartedAt === null) s.pbStartedAt = now;
    const remaining = Math.max(0, s.pbReceived / PCM_BYTES_PER_MS - (now - s.pbStartedAt));
    this.timers.set(
      'playback',
      () => {
        if (this.session === s && s.id) this.link?.send(JSON.stringify({ type: 'playback_complete', session_id: s.id }));
      },
      remaining,
    );
  }

  private sessionOver(reason: SessionEndReason | 'lost'): void {
    const s = this.session;
    this.session = null;
    this.timers.clear('audio');
    this.timers.clear('playback');
    if (!s || s.id === null) return;
    if (reason === 'complete') this.ctx.count('sessions_completed');
    const dropped = isDropped(reason);
    if (dropped) this.ctx.count('sessions_dropped', 1, { reason });
    this.ctx.env.metrics.add('session_drop_rate', dropped ? 1 : 0, this.ctx.tags);
    const mode = this.ctx.opts.wake.mode;
    if (mode === 'poisson' || mode === 'fixed') this.scheduleNextWake();
  }

  // ---- wakes ----

  private scheduleNextWake(): void {
    const w = this.ctx.opts.wake;
    const gap = w.mode === 'poisson' ? expInterval(w.interval_ms, this.ctx.env.random) : w.interval_ms;
    this.timers.set('wake', () => this.wakeNow(), gap);
  }

  private wakeNow(): void {
    if (!this.link?.alive) return;
    if (this.session) {
      // The user is mid-turn: a real user does not say the wake word again. Try later.
      if (this.ctx.opts.wake.mode !== 'once') this.scheduleNextWake();
      return;
    }
    this.ctx.count('wakes');
    const wakeId = `w-${(wakeCounter++).toString(36)}-${this.ctx.opts.id}`.slice(0, 64);
    const at = this.ctx.env.now();
    // A wake still waiting offline is replaced by this one: the user's earlier wake word went unanswered.
    if (this.wakeJudge) this.wakeJudged(this.wakeJudge.wakeId, false);
    this.wakeJudge = { wakeId, at };
    this.timers.set('wakeAck', () => this.wakeJudged(wakeId, false), WAKE_ACK_TIMEOUT_MS);
    if (this.link.up) this.sendWake(wakeId, at);
    else this.pendingWake = { wakeId, at };
  }

  /** A wake is judged once: acknowledged in time (1) or not (0), tagged chaos:on when a fault window overlapped it. */
  private wakeJudged(wakeId: string, ok: boolean): void {
    const w = this.wakeJudge;
    if (!w || w.wakeId !== wakeId) return;
    this.wakeJudge = null;
    this.timers.clear('wakeAck');
    const now = this.ctx.env.now();
    this.ctx.env.metrics.add('wake_success', ok ? 1 : 0, this.ctx.outcomeTags(w.at, ok ? now : w.at + WAKE_ACK_TIMEOUT_MS));
  }

  private sendWake(wakeId: string, at: number): void {
    if (!this.link?.up) return;
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
    this.link.send(JSON.stringify({ type: 'hotword_detected', wake_id: wakeId, t: at }));
  }

  // ---- speech ----

  /** Streams the utterance at real-time pace in the profile's frame size, then ends speech its way. */
  private startAudio(): void {
    const s = this.session;
    const link = this.link;
    if (!s || !link) return;
    // The hot path of a big fleet (one call per 20 ms frame per talking device): everything that does not change
    // during the stream is read once here, and the step is its own timer callback: one closure per stream, not two per frame.
    const { env, profile } = this.ctx;
    const h = this.timers.h;
    const { speech, silent, silence } = env.audio.frames(profile.frame_bytes);
    const frameMs = profile.frame_bytes / PCM_BYTES_PER_MS;
    const explicitEos = profile.end_of_speech === 'explicit';
    const slipAfter = 3 * frameMs;
    s.streamT0 = env.now();
    s.frame = 0;
    const step = () => {
      h.audio = null;
      const ws = link.socket;
      if (this.session !== s || s.stage !== 'listening' || !ws) return;
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
        if (s.silenceSentMs >= VAD_MAX_TRAILING_MS) return;
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
        this.ctx.count('audio_slips');
      }
      h.audio = env.setTimeout(step, due > now ? due - now : 0);
    };
    step();
  }
}
