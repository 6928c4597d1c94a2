// A device's conversations: the wake schedule, the wake said the dialect's way (or held until the link is up, or
// opening a per-wake channel), its acknowledgement judged, the utterance streamed at real-time pace (PCM frames or
// Opus packets, framed as the dialect says), the end of speech, the reply played back through a jitter-buffer model
// timed by the audio's real duration, and how each session ended. It speaks through the link (device-link.ts).
import { base64, base64Length, bytesPerMs, encodeSpeech } from './audio-codec.ts';
import {
  BoundedLabels,
  capture,
  frameAudio,
  matches,
  pathValue,
  render,
  unframeAudio,
  type Template,
  type Vars,
} from './dialect.ts';
import type { DeviceContext } from './device-env.ts';
import { Timers } from './device-env.ts';
import { INTAKE, UNSENT_CHECK_FRAMES, type Link, type LinkOwner } from './device-link.ts';
import { opusPacketMs } from './opus.ts';
import { pcmDurationMs } from './pcm.ts';
import { DEFAULTS, isDropped, SESSION_END_REASONS, type SessionEndReason } from './protocol.ts';
import { capturedNumber, resumeExempt } from './device-rules.ts';
import { expInterval } from './rng.ts';
import { END_DUE_MS, WAKE_ACK_TIMEOUT_MS } from './verdict.ts';

interface ActiveSession {
  wakeId: string;
  wakeAt: number;
  id: string | null;
  /**
   * The end of the user's speech: when the device sent its last voiced frame (a microphone sends a frame once it has
   * recorded it), or the server's first sign that it heard the end, if that came first. response_latency runs from it.
   */
  eosAt: number | null;
  /** The server's first sign that it heard the end of speech (transcript, reply start or reply audio). */
  endpointedAt: number | null;
  /** A transcript (the dialect's sign of hearing) came after the end of speech. */
  heardEnd: boolean;
  responseRecorded: boolean;
  /** Stage as far as the device knows. */
  stage: 'waking' | 'listening' | 'thinking' | 'speaking';
  frame: number;
  silenceSentMs: number;
  streamT0: number;
  /** Playback model: ms of reply audio received, and when playback (re)started. */
  pbReceivedMs: number;
  pbStartedAt: number | null;
  /** Barge-in: when the device sent its abort, and when the last stale reply audio arrived after it. */
  bargeAt: number | null;
  lastStaleAt: number | null;
  /** When the server last said anything of this session (a message or reply audio): the stall check reads it. */
  heardAt: number;
  /** The reply as it arrived: when it started, the audio payload bytes, the length the dialect announced (if any). */
  replyAt: number | null;
  replyBytes: number;
  replyAnnounced: number | null;
  /** Times and ms the playback ran dry mid-reply (beyond PLAYBACK_GAP_TOLERANCE_MS). */
  replyStalls: number;
  replyStallMs: number;
  replyJudged: boolean;
  /** When the turn began (acknowledged, or a follow-up): an open session older than the stall bound at the end is owed. */
  turnAt: number;
}

/**
 * A conversation that waits on a connected server and hears nothing of it for this long is over: it ends `timeout`, a
 * dropped session (a server that stops mid-reply, never sends its end, or never answers the end of speech). The
 * wait pauses while the link is down (a resume may still bring the reply) and while the device itself is talking or
 * playing what it already has.
 */
export const SESSION_STALL_MS = 15_000;

/** How long a device waits, after its abort, for the server to stop the reply before it calls the session over. */
export const BARGE_IN_WAIT_MS = 5000;

/**
 * Trailing silence a VAD-ended stream sends at most while it waits for the server to hear the end of speech (a real
 * microphone streams until the server answers; a server that has not endpointed after this long is stalled).
 */
export const VAD_MAX_TRAILING_MS = 5000;
/**
 * A gap in playback shorter than this is not counted as a stutter: the device's clock is in ms and its timers fire a
 * few ms late, and a jitter buffer conceals a gap of under one 20 ms audio frame.
 */
export const PLAYBACK_GAP_TOLERANCE_MS = 20;
/** A reply longer than this (2 minutes of audio) is no answer to a spoken question: the server is streaming forever. */
export const MAX_REPLY_AUDIO_MS = 120_000;
/** Bytes a reply may run past its announced length (a last partial frame) before it is an overrun. */
export const OVERRUN_SLACK_BYTES = 4096;
/**
 * Reply audio that arrives this long after its session ended is still that reply's (a server's queue drains after
 * its stop: xiaozhi sends one or two frames after the tts stop that answers an abort); later, with no session, it is a
 * protocol violation (binary_outside_session).
 */
export const LATE_AUDIO_GRACE_MS = 2000;
/** An uplink stream more than this many frames late slips instead of bursting (frameDelay). */
export const SLIP_AFTER_FRAMES = 3;
const END_REASONS = new Set<string>(SESSION_END_REASONS);

/** The `code` tag of protocol_errors: what the server's error messages say, bounded. */
const ERROR_CODES = new BoundedLabels(16);

/**
 * The uplink as the dialect frames it: one message per frame (binary, or with framing 'json' the frame in base64 for
 * the dialect's audio message), the frames VAD hears as silence, and silence.
 */
interface Uplink {
  frames: (ArrayBuffer | string)[];
  silent: boolean[];
  /** The index of the last voiced frame: its sending is the end of the user's speech. */
  lastVoiced: number;
  silence: ArrayBuffer | string;
  frameMs: number;
  /** Framing 'json': the message a frame rides in (audio.up.message). */
  json: Template | null;
}

/** Stands for the frame while the audio message is rendered once per stream (JSON-safe, never in a variable). */
const AUDIO_SENTINEL = '@@wakestorm-audio-frame@@';

/** How a frame goes on the wire: as it is, or inside the dialect's audio message rendered with this device's vars. */
function framer(u: Uplink, vars: Vars): ((f: ArrayBuffer | string) => ArrayBuffer | string) | null {
  if (!u.json) return null;
  const [pre, post] = render(u.json, { ...vars, audio: AUDIO_SENTINEL }).split(AUDIO_SENTINEL) as [string, string];
  return (f) => pre + (f as string) + post;
}
const UPLINKS = new WeakMap<object, Map<string, Uplink>>();

/** The server answered before the user's speech ended (an early reply: judged then, a failure, never timed). */
function answeredEarly(s: ActiveSession): boolean {
  return s.endpointedAt !== null && (s.eosAt === null || s.endpointedAt < s.eosAt);
}

/** A session's reply is overdue at `now`: its speech ended more than END_DUE_MS ago and no reply has begun. */
function replyOverdue(s: ActiveSession, now: number): boolean {
  return !s.responseRecorded && s.eosAt !== null && !answeredEarly(s) && now - s.eosAt >= END_DUE_MS;
}

export class Conversation implements LinkOwner {
  private session: ActiveSession | null = null;
  private pendingWake: { wakeId: string; at: number } | null = null;
  /** The wake waiting for its acknowledgement (wake_success). */
  private wakeJudge: { wakeId: string; at: number } | null = null;
  /** Uplink frames sent since the fleet last asked (takeFramesSent). */
  private framesSent = 0;
  /** The device's own count of turns: wake and follow-up ids are `w-<n>-<device id>`, the same on both engines. */
  private turns = 0;
  private link: Link | null = null;
  /** Listening on the open link after a reply (after_reply 'listen'): the microphone streams until the next turn. */
  private followUp = false;
  /** When the last session ended (reply audio after it is still that reply's for LATE_AUDIO_GRACE_MS). */
  private endedAt = -Infinity;
  /** The link's own session id from its ready message (xiaozhi's channel id), for turns that have no wake. */
  private linkSessionId: string | null = null;
  private readonly timers: Timers<'wake' | 'wakeAck' | 'audio' | 'playback' | 'barge' | 'stall'>;

  constructor(private readonly ctx: DeviceContext) {
    this.timers = new Timers(ctx.env, ['wake', 'wakeAck', 'audio', 'playback', 'barge', 'stall']);
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

  /**
   * The run ends. A session still open is judged: owed when its turn began more than the stall bound ago (a reply
   * that never ended, a server that streams forever: dropped, `timeout`). One whose end of speech is more than
   * END_DUE_MS old with no reply begun owes its reply: it is not open, so a run with no reply at all fails. Only a
   * session or a wake still young at the end is open at the end (not counted in the SLOs that need its outcome); one
   * answered early was judged then.
   */
  stop(): void {
    const s = this.session;
    const now = this.ctx.env.now();
    if (s && s.id !== null && now - s.turnAt >= SESSION_STALL_MS) {
      this.ctx.env.log?.(
        `${this.ctx.opts.id}: session ${s.id} still open at the end, ${now - s.turnAt} ms after it began`,
      );
      this.ctx.count('sessions_dropped', 1, { reason: 'timeout' });
      this.ctx.outcome('session_drop_rate', 1, s.wakeAt, now);
    } else if (s && s.id !== null && replyOverdue(s, now)) {
      this.ctx.env.log?.(
        `${this.ctx.opts.id}: session ${s.id} had no reply at the end, ${now - (s.eosAt ?? now)} ms after its speech ended`,
      );
    } else if (s && s.id !== null && !answeredEarly(s)) {
      // Cut by the run's end before it owed an outcome: neither lost nor waiting for a reply that never came.
      this.ctx.count('sessions_open_at_end');
    }
    // A wake still waiting for its acknowledgement: the end came first, not the server's answer (unless it was due).
    if (this.wakeJudge && now - this.wakeJudge.at < END_DUE_MS) this.ctx.count('wakes_open_at_end');
    else if (this.wakeJudge) {
      this.ctx.env.log?.(
        `${this.ctx.opts.id}: wake ${this.wakeJudge.wakeId} unacknowledged at the end after ${now - this.wakeJudge.at} ms`,
      );
    }
    this.wakeJudge = null;
    this.session = null;
    this.timers.clearAll();
  }

  /** Uplink frames sent since the last call (the fleet reports them as audio_frames once a second). */
  takeFramesSent(): number {
    const n = this.framesSent;
    this.framesSent = 0;
    return n;
  }

  busy(): boolean {
    return this.session !== null || this.pendingWake !== null;
  }

  private say(t: Template | null): void {
    if (t) this.link?.send(render(t, this.ctx.vars));
  }

  // ---- what the link reports ----

  linkUp(): void {
    const { vars } = this.ctx;
    const s = this.session;
    this.linkSessionId = typeof vars.session_id === 'string' && vars.session_id ? vars.session_id : null;
    this.followUp = false;
    if (s) {
      // The server kept the device's state (resumed): the resume worked, even if the session itself ended meanwhile.
      if (s.id !== null) this.judgeResume(s, vars.resumed === true);
      if (s.id !== null && vars.resumed === true && vars.resumed_session === s.id) {
        this.ctx.count('sessions_resumed');
        // The server replays the reply from its start (or ends an interrupted turn): reset the playback model.
        s.pbReceivedMs = 0;
        s.pbStartedAt = null;
        const st = vars.resumed_stage;
        s.stage = st === 'thinking' || st === 'speaking' ? st : 'listening';
        this.watchStall(s);
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

  /**
   * A session that outlived its link was offered for resume. The server owes it when the link was cut (not closed by a
   * server going away: 1001, 1012) and the device came back within the protocol's resume grace: resume_success.
   */
  private judgeResume(s: ActiveSession, resumed: boolean): void {
    const loss = this.link?.lastLoss;
    if (!loss || resumeExempt(loss.code)) return;
    const now = this.ctx.env.now();
    if (now - loss.at > DEFAULTS.resume_grace_ms) return;
    this.ctx.env.metrics.add('resume_success', resumed ? 1 : 0, this.ctx.tags);
    if (!resumed)
      this.ctx.env.log?.(`${this.ctx.opts.id}: session ${s.id} not resumed ${now - loss.at} ms after the loss`);
  }

  linkLost(wasConnected: boolean, final: boolean): void {
    this.followUp = false;
    this.timers.clear('audio');
    this.timers.clear('stall');
    const perWake = this.link?.perWake ?? false;
    if (perWake && this.pendingWake) {
      // The channel a wake opened never came up: that wake goes unanswered.
      this.wakeJudged(this.pendingWake.wakeId, false);
      this.pendingWake = null;
      this.scheduleNextWakeIfRepeating();
    }
    // A session survives a lost link only where the dialect and profile resume and the device will come back.
    const resumes = this.ctx.dialect.resume && this.ctx.profile.resume && !perWake;
    if (this.session && (final || perWake || (wasConnected && !resumes))) this.sessionOver('lost');
    if (final) this.timers.clear('wake');
  }

  /** A server message that is not the link's own; false when no step of the conversation took it. */
  message(msg: object): boolean {
    if (this.jsonAudio(msg)) return true;
    const s = this.session;
    if (!s) return false;
    const { recv, capture: cap } = this.ctx.dialect;
    const { vars } = this.ctx;
    if (s.id === null) {
      if (recv.ack && recv.ack !== 'ready' && matches(recv.ack, msg, vars)) {
        capture(cap.ack, msg, vars);
        this.acknowledged(s);
        return true;
      }
      return false;
    }
    const now = this.ctx.env.now();
    if (recv.transcript && matches(recv.transcript, msg, vars)) {
      s.heardAt = now;
      if (s.eosAt !== null) s.heardEnd = true;
      if (s.stage === 'listening' || s.stage === 'thinking') this.endpointed(s, now);
      if (s.stage === 'listening') s.stage = 'thinking';
      this.timers.clear('audio');
    } else if (recv.reply_start && matches(recv.reply_start, msg, vars)) {
      capture(cap.reply_start, msg, vars);
      this.replyStarts(s, now);
    } else if (matches(recv.reply_end, msg, vars)) {
      s.heardAt = now;
      if (s.bargeAt !== null) {
        this.bargeOver(s, recv.session_end ? null : 'barged_in');
        return true;
      }
      capture(cap.reply_end, msg, vars);
      // The reply's announced length: the reply_bytes capture, a number or none (core/device-rules.ts).
      const end = capturedNumber(vars.reply_bytes);
      if (end !== null) s.replyAnnounced = Math.max(end, s.replyAnnounced ?? 0);
      // An end with no start: a reply that never had any audio.
      if (s.replyAt === null) s.replyAt = now;
      this.judgeReply(s, now);
      this.schedulePlaybackDone(s);
    } else if (recv.session_end && matches(recv.session_end, msg, vars)) {
      s.heardAt = now;
      if (s.bargeAt !== null) this.recordBargeIn(s);
      capture(cap.session_end, msg, vars);
      const r = String(vars.reason ?? 'complete');
      this.sessionOver(END_REASONS.has(r) ? (r as SessionEndReason) : 'error');
    } else if (recv.error && matches(recv.error, msg, vars)) {
      s.heardAt = now;
      capture(cap.error, msg, vars);
      this.ctx.count('protocol_errors', 1, { code: ERROR_CODES.label(vars.error_code, 'unknown') });
    } else return false;
    return true;
  }

  /**
   * The reply begins (the dialect's reply_start, or with none its first audio): speaking, judged afresh (a resumed
   * session replays it from its start).
   */
  private replyStarts(s: ActiveSession, now: number): void {
    s.heardAt = now;
    if (s.stage === 'listening' || s.stage === 'thinking') this.endpointed(s, now);
    s.stage = 'speaking';
    s.pbReceivedMs = 0;
    s.pbStartedAt = null;
    s.replyAt = now;
    s.replyBytes = 0;
    s.replyAnnounced = capturedNumber(this.ctx.vars.reply_bytes);
    s.replyStalls = 0;
    s.replyStallMs = 0;
    s.replyJudged = false;
    this.timers.clear('audio');
    this.timers.clear('playback');
  }

  /** The server showed it heard the end of speech: the endpointing part of the user's wait is over. */
  private endpointed(s: ActiveSession, now: number): void {
    if (s.endpointedAt !== null) return;
    s.endpointedAt = now;
    if (s.eosAt === null) {
      // The server answered before the device's last voiced frame: it cut the user off, and nobody waited for this
      // answer. No latency is timed for the session; it counts as an early reply, with how far into the speech it came.
      const speech = this.uplink().lastVoiced + 1;
      const sent = Math.min(s.frame, speech);
      this.ctx.outcome('early_replies', 1, s.turnAt, now);
      this.ctx.outcome('early_reply_speech', speech > 0 ? (sent / speech) * 100 : 0, s.turnAt, now);
      this.ctx.env.log?.(`${this.ctx.opts.id}: session ${s.id} answered after ${sent} of ${speech} speech frames`);
      return;
    }
    this.ctx.trendSpan('endpointing_latency', s.eosAt, now);
  }

  /**
   * A reply is whole and smooth, or it is not: judged once, when it ends (the dialect's reply end, or the session's
   * end while it played). Truncated: no audio at all, or fewer audio bytes than the dialect's announcement. Stuttered:
   * the playback ran dry mid-reply. Tagged chaos:on|off by the reply's span, like the other outcomes.
   */
  private judgeReply(s: ActiveSession, now: number): void {
    if (s.replyJudged || s.replyAt === null || s.bargeAt !== null) return;
    s.replyJudged = true;
    const short = s.replyBytes === 0 || (s.replyAnnounced !== null && s.replyBytes < s.replyAnnounced);
    this.ctx.outcome('reply_truncated', short ? 1 : 0, s.replyAt, now);
    this.ctx.outcome('reply_stutter', s.replyStalls > 0 ? 1 : 0, s.replyAt, now);
    this.ctx.outcome('playback_stall_time', s.replyStallMs, s.replyAt, now);
  }

  /** Reply audio in binary frames: timed by what it plays (PCM and µ-law by their bytes, an Opus packet by its TOC). */
  binary(buf: ArrayBuffer): void {
    const down = this.ctx.dialect.audio.down;
    // Raw PCM needs no view of the bytes at all (a typed array per chunk is an allocation k6 pays on every message).
    if (down.framing === 'raw' && down.codec !== 'opus')
      return this.replyAudio(buf.byteLength / bytesPerMs(down.codec, down.sample_rate), buf.byteLength);
    if (down.framing === 'json') return this.replyAudio(-1, 0);
    const payload = unframeAudio(down.framing, new Uint8Array(buf));
    if (!payload) return this.replyAudio(-1, 0);
    const ms =
      down.codec === 'opus' ? opusPacketMs(payload) : payload.byteLength / bytesPerMs(down.codec, down.sample_rate);
    this.replyAudio(ms, payload.byteLength);
  }

  /**
   * A server message that carries reply audio in base64 (audio.down framing 'json'); false when it is not one.
   * A field that is not base64 is the server's message, not audio: it plays nothing.
   */
  private jsonAudio(msg: object): boolean {
    const down = this.ctx.dialect.audio.down;
    if (down.framing !== 'json' || !matches(down.match!, msg, this.ctx.vars)) return false;
    const v = pathValue(msg, down.field!);
    const n = typeof v === 'string' ? base64Length(v) : null;
    this.replyAudio(n === null ? -1 : n / bytesPerMs(down.codec, down.sample_rate), n ?? 0);
    return true;
  }

  /**
   * Reply audio of `ms` milliseconds and `bytes` payload bytes (ms < 0: a message that is not audio after all): the
   * first chunk after the end of speech is the response latency; playback is modelled in real time.
   */
  private replyAudio(ms: number, bytes: number): void {
    const s = this.session;
    const now = this.ctx.env.now();
    if (!s) {
      // Audio with no conversation to play it in: the server's, not a late frame of the last reply.
      if (now - this.endedAt > LATE_AUDIO_GRACE_MS) this.link?.violation('binary_outside_session');
      return;
    }
    // A dialect with no reply_start: the first reply audio of a session that is listening or thinking starts it.
    if (
      this.ctx.dialect.recv.reply_start === null &&
      s.id !== null &&
      (s.stage === 'listening' || s.stage === 'thinking')
    )
      this.replyStarts(s, now);
    if (s.stage !== 'speaking') return;
    s.heardAt = now;
    if (s.bargeAt !== null) {
      // Stale: the user already interrupted this reply.
      s.lastStaleAt = now;
      this.ctx.count('barge_in_late_frames');
      return;
    }
    if (!s.responseRecorded) this.endpointed(s, now);
    if (!s.responseRecorded && s.eosAt !== null) {
      this.ctx.trendSpan('response_latency', s.eosAt, now);
      if (s.endpointedAt !== null) this.ctx.trendSpan('processing_latency', s.endpointedAt, now);
      s.responseRecorded = true;
      const barge = this.ctx.profile.barge_in_ms;
      if (barge !== undefined) this.timers.set('playback', () => this.bargeIn(s), barge);
    }
    if (ms < 0) return;
    s.replyBytes += bytes;
    // A reply past what it announced, or past any plausible answer, is the server streaming forever.
    if (s.replyAnnounced !== null && s.replyBytes > s.replyAnnounced + OVERRUN_SLACK_BYTES)
      return this.link?.violation('reply_overrun');
    if (s.pbReceivedMs + ms > MAX_REPLY_AUDIO_MS) return this.link?.violation('reply_too_long');
    // Jitter buffer drained at real time: if playback already consumed everything, this chunk comes after an underrun.
    if (s.pbStartedAt === null) {
      s.pbReceivedMs += ms;
      if (s.pbReceivedMs >= this.ctx.profile.playback_prebuffer_ms) s.pbStartedAt = now;
      return;
    }
    const dry = now - s.pbStartedAt - s.pbReceivedMs;
    if (dry > 0) {
      if (dry > PLAYBACK_GAP_TOLERANCE_MS) {
        this.ctx.count('playback_underruns');
        s.replyStalls++;
        s.replyStallMs += dry;
      }
      s.pbStartedAt = now - s.pbReceivedMs; // resume playing from where it ran dry, now
    }
    s.pbReceivedMs += ms;
  }

  // ---- sessions ----

  /** The reply is all here: when its last audio has played, say so (or end the session, where the dialect has no end). */
  private schedulePlaybackDone(s: ActiveSession): void {
    const now = this.ctx.env.now();
    if (s.pbStartedAt === null) s.pbStartedAt = now;
    const remaining = Math.max(0, s.pbReceivedMs - (now - s.pbStartedAt));
    this.timers.set(
      'playback',
      () => {
        if (this.session !== s || s.id === null) return;
        this.say(this.ctx.dialect.send.playback_done);
        if (!this.ctx.dialect.recv.session_end) this.sessionOver('complete');
      },
      remaining,
    );
  }

  /** The user talks over the reply: the dialect's abort, then wait for the server to stop it. */
  private bargeIn(s: ActiveSession): void {
    if (this.session !== s || s.stage !== 'speaking' || s.bargeAt !== null) return;
    s.bargeAt = this.ctx.env.now();
    this.ctx.count('barge_ins');
    this.say(this.ctx.dialect.send.abort);
    this.timers.set('barge', () => this.bargeOver(s, 'cancelled'), BARGE_IN_WAIT_MS);
  }

  private recordBargeIn(s: ActiveSession): void {
    if (s.bargeAt === null) return;
    this.ctx.trend('barge_in_stop_time', (s.lastStaleAt ?? s.bargeAt) - s.bargeAt);
    s.bargeAt = null;
    this.timers.clear('barge');
  }

  /** The server stopped the reply (its reply end), or the wait ran out: measured, and the session ends (or waits for the server's end). */
  private bargeOver(s: ActiveSession, reason: SessionEndReason | null): void {
    if (this.session !== s) return;
    this.recordBargeIn(s);
    if (reason) this.sessionOver(reason);
  }

  private sessionOver(reason: SessionEndReason | 'lost'): void {
    const s = this.session;
    this.endedAt = this.ctx.env.now();
    // A session that ends complete while its reply played: the reply ends with it.
    if (s && reason === 'complete') this.judgeReply(s, this.ctx.env.now());
    this.session = null;
    this.timers.clear('audio');
    this.timers.clear('playback');
    this.timers.clear('barge');
    this.timers.clear('stall');
    this.ctx.vars.session_id = undefined;
    this.ctx.vars.wake_id = undefined;
    // After a turn the user ended or heard out, a profile in auto mode listens on; otherwise a per-wake channel closes
    // with its conversation.
    const listening =
      s !== null &&
      s.id !== null &&
      (reason === 'complete' || reason === 'barged_in' || reason === 'cancelled') &&
      this.listenAgain();
    if (!listening && this.link?.perWake) this.link.close();
    if (!s || s.id === null) return;
    if (reason === 'complete') this.ctx.count('sessions_completed');
    // Answered, yet the server never showed it heard the speech end (no transcript after it, where the dialect has
    // one): a reply to something other than what the user said. An early reply was counted as such already.
    if (reason === 'complete' && this.ctx.dialect.recv.transcript && !s.heardEnd && !answeredEarly(s)) {
      this.ctx.outcome('replies_unheard', 1, s.turnAt, this.ctx.env.now());
      this.ctx.env.log?.(`${this.ctx.opts.id}: session ${s.id} was answered with no transcript after its speech ended`);
    }
    const dropped = isDropped(reason);
    if (dropped) this.ctx.count('sessions_dropped', 1, { reason });
    this.ctx.outcome('session_drop_rate', dropped ? 1 : 0, s.wakeAt, this.ctx.env.now());
    this.scheduleNextWakeIfRepeating();
  }

  /**
   * after_reply 'listen': say the dialect's listen on the open link and stream the microphone (silence, at real time)
   * until the user speaks again (the next turn in the schedule) or the link ends. False when the profile idles.
   */
  private listenAgain(): boolean {
    const link = this.link;
    if (this.ctx.profile.after_reply !== 'listen' || !link?.up) return false;
    const { env } = this.ctx;
    this.followUp = true;
    if (this.linkSessionId) this.ctx.vars.session_id = this.linkSessionId;
    this.say(this.ctx.dialect.send.listen);
    const h = this.timers.h;
    const u = this.uplink();
    const { frameMs } = u;
    const wrap = framer(u, this.ctx.vars);
    const silence = wrap ? wrap(u.silence) : u.silence;
    const clock = { streamT0: env.now() };
    let k = 0;
    const step = () => {
      h.audio = null;
      const ws = link.socket;
      if (!this.followUp || this.session || !ws) return;
      ws.send(silence);
      this.framesSent++;
      k++;
      h.audio = env.setTimeout(step, this.frameDelay(clock, k, frameMs, env.now()));
    };
    h.audio = env.setTimeout(step, frameMs);
    return true;
  }

  /** The user speaks again on a link that is already listening: a turn with no wake word and nothing to acknowledge. */
  private followUpTurn(): void {
    const now = this.ctx.env.now();
    this.followUp = false;
    this.timers.clear('audio');
    this.ctx.count('follow_ups');
    const s = this.newSession(`f-${(this.turns++).toString(36)}-${this.ctx.opts.id}`.slice(0, 64), now);
    this.session = s;
    this.beginTurn(s, this.linkSessionId ?? s.wakeId, now);
  }

  // ---- wakes ----

  private scheduleNextWakeIfRepeating(): void {
    const mode = this.ctx.opts.wake.mode;
    if (mode === 'poisson' || mode === 'fixed') this.scheduleNextWake();
  }

  private scheduleNextWake(): void {
    const w = this.ctx.opts.wake;
    const gap = w.mode === 'poisson' ? expInterval(w.interval_ms, this.ctx.env.random) : w.interval_ms;
    this.timers.set('wake', () => this.wakeNow(), gap);
  }

  private wakeNow(): void {
    const link = this.link;
    if (!link?.alive) return;
    if (this.session || (link.perWake && this.pendingWake)) {
      // The user is mid-turn: a real user does not say the wake word again. Try later.
      if (this.ctx.opts.wake.mode !== 'once') this.scheduleNextWake();
      return;
    }
    // Still listening after the last reply: the user just speaks, no wake word.
    if (this.followUp && link.up) return this.followUpTurn();
    this.ctx.count('wakes');
    const wakeId = `w-${(this.turns++).toString(36)}-${this.ctx.opts.id}`.slice(0, 64);
    const at = this.ctx.env.now();
    // A wake still waiting offline is replaced by this one: the user's earlier wake word went unanswered.
    if (this.wakeJudge) this.wakeJudged(this.wakeJudge.wakeId, false);
    this.wakeJudge = { wakeId, at };
    this.timers.set('wakeAck', () => this.wakeUnanswered(wakeId), WAKE_ACK_TIMEOUT_MS);
    if (link.up) this.sendWake(wakeId, at);
    else {
      this.pendingWake = { wakeId, at };
      // The firmware opens its channel when it hears the wake word.
      if (link.perWake) link.open();
    }
  }

  /**
   * No acknowledgement in WAKE_ACK_TIMEOUT_MS: the wake failed, and the device stops waiting for it (its per-wake
   * channel closes) so that the next wake word is heard. Nothing had started, so nothing is dropped.
   */
  private wakeUnanswered(wakeId: string): void {
    this.wakeJudged(wakeId, false);
    const s = this.session;
    if (!s || s.wakeId !== wakeId || s.id !== null) return;
    this.session = null;
    this.endedAt = this.ctx.env.now();
    if (this.link?.perWake) this.link.close();
    this.scheduleNextWakeIfRepeating();
  }

  /** A wake is judged once: acknowledged in time (1) or not (0), tagged chaos:on when a fault window overlapped it. */
  private wakeJudged(wakeId: string, ok: boolean): void {
    const w = this.wakeJudge;
    if (!w || w.wakeId !== wakeId) return;
    this.wakeJudge = null;
    this.timers.clear('wakeAck');
    const now = this.ctx.env.now();
    this.ctx.outcome('wake_success', ok ? 1 : 0, w.at, ok ? now : w.at + WAKE_ACK_TIMEOUT_MS);
  }

  private sendWake(wakeId: string, at: number): void {
    if (!this.link?.up) return;
    const s = this.newSession(wakeId, at);
    this.session = s;
    const { vars, dialect } = this.ctx;
    vars.wake_id = wakeId;
    vars.now = at;
    for (const t of dialect.send.wake) this.say(t);
    // A per-wake channel's handshake was the acknowledgement: the wait ran from the wake word to the server's hello.
    if (dialect.recv.ack === 'ready') this.acknowledged(s);
    // A server that acknowledges nothing: the wake reached it (wake_success), the conversation starts now, and no
    // wake_ack_latency is owed (wakes_without_ack).
    else if (dialect.recv.ack === null) {
      this.ctx.count('wakes_without_ack');
      this.wakeJudged(s.wakeId, true);
      this.beginTurn(s, s.wakeId, this.ctx.env.now());
    }
  }

  private newSession(wakeId: string, at: number): ActiveSession {
    return {
      wakeId,
      wakeAt: at,
      id: null,
      eosAt: null,
      endpointedAt: null,
      heardEnd: false,
      responseRecorded: false,
      stage: 'waking',
      frame: 0,
      silenceSentMs: 0,
      streamT0: 0,
      pbReceivedMs: 0,
      pbStartedAt: null,
      bargeAt: null,
      lastStaleAt: null,
      heardAt: 0,
      replyAt: null,
      replyBytes: 0,
      replyAnnounced: null,
      replyStalls: 0,
      replyStallMs: 0,
      replyJudged: false,
      turnAt: at,
    };
  }

  private acknowledged(s: ActiveSession): void {
    const { vars } = this.ctx;
    const now = this.ctx.env.now();
    this.ctx.trendSpan('wake_ack_latency', s.wakeAt, now);
    this.wakeJudged(s.wakeId, true);
    this.beginTurn(s, typeof vars.session_id === 'string' && vars.session_id ? vars.session_id : s.wakeId, now);
  }

  /** A session is on (acknowledged, or a follow-up): it has its id, listens, its stall watch starts, the user speaks. */
  private beginTurn(s: ActiveSession, id: string, now: number): void {
    s.id = id;
    this.ctx.vars.session_id = id;
    s.stage = 'listening';
    this.ctx.count('sessions_started');
    s.heardAt = now;
    s.turnAt = now;
    this.watchStall(s);
    this.startAudio();
  }

  /**
   * The stall check (SESSION_STALL_MS): one timer per session, not one per message; when it fires it looks at when
   * the server last spoke and waits again for the rest, or while the device is still talking or playing.
   */
  private watchStall(s: ActiveSession): void {
    const check = () => {
      if (this.session !== s) return;
      const h = this.timers.h;
      const quiet = this.ctx.env.now() - s.heardAt;
      if (h.audio !== null || h.playback !== null || h.barge !== null || quiet < SESSION_STALL_MS) {
        this.timers.set('stall', check, Math.max(1000, SESSION_STALL_MS - quiet));
        return;
      }
      this.ctx.env.log?.(
        `${this.ctx.opts.id}: session ${s.id} heard nothing from the server for ${SESSION_STALL_MS} ms`,
      );
      this.sessionOver('timeout');
    };
    this.timers.set('stall', check, SESSION_STALL_MS);
  }

  // ---- speech ----

  /** The utterance as this device's dialect sends it, built once per process for each (codec, framing, frame size). */
  private uplink(): Uplink {
    const { env, profile, dialect } = this.ctx;
    const { codec, framing, sample_rate: rate } = dialect.audio.up;
    const key = `${codec}/${framing}/${rate}/${codec === 'opus' ? 60 : profile.frame_bytes}`;
    let byKey = UPLINKS.get(env.audio);
    if (!byKey) UPLINKS.set(env.audio, (byKey = new Map()));
    let u = byKey.get(key);
    if (!u) {
      const json = framing === 'json' ? dialect.audio.up.message! : null;
      if (codec === 'opus') {
        const clip = env.audio.opus();
        // Frame i's timestamp (BinaryProtocol2) is its offset in the stream: the same every time, so built once.
        u = {
          frames: clip.packets.map((p, i) => frameAudio(framing, p, i * clip.frameMs)),
          silent: clip.silent,
          lastVoiced: clip.silent.lastIndexOf(false),
          silence: frameAudio(framing, clip.silence, 0),
          frameMs: clip.frameMs,
          json,
        };
      } else {
        const f = env.audio.frames(profile.frame_bytes);
        const frameMs = pcmDurationMs(profile.frame_bytes);
        // The committed 16 kHz speech in the dialect's codec and rate, a frame at a time (core/audio-codec.ts).
        const same = codec === 'pcm_s16le' && rate === 16_000;
        const wrap = (b: ArrayBuffer, i: number): ArrayBuffer | string => {
          if (same && framing === 'raw') return b;
          const payload = same ? new Uint8Array(b) : encodeSpeech(new Uint8Array(b), codec, rate);
          if (framing === 'json') return base64(payload);
          return frameAudio(framing, payload, i * frameMs);
        };
        u = {
          frames: f.speech.map(wrap),
          silent: f.silent,
          lastVoiced: f.silent.lastIndexOf(false),
          silence: wrap(f.silence, 0),
          frameMs,
          json,
        };
      }
      byKey.set(key, u);
    }
    return u;
  }

  /** Streams the utterance at real-time pace, then ends speech its way. */
  private startAudio(): void {
    const s = this.session;
    const link = this.link;
    if (!s || !link) return;
    // The hot path of a big fleet (one call per frame per talking device): everything that does not change during
    // the stream is read once here, and the step is its own timer callback: one closure per stream, not two per frame.
    const { env, profile } = this.ctx;
    const h = this.timers.h;
    const u = this.uplink();
    const { frames, frameMs, lastVoiced } = u;
    const wrap = framer(u, this.ctx.vars);
    const silence = wrap ? wrap(u.silence) : u.silence;
    const explicitEos = profile.end_of_speech === 'explicit';
    const eos = this.ctx.dialect.send.end_of_speech;
    const slipAfter = SLIP_AFTER_FRAMES * frameMs;
    s.streamT0 = env.now();
    s.frame = 0;
    const step = () => {
      h.audio = null;
      const ws = link.socket;
      if (this.session !== s || s.stage !== 'listening' || !ws) return;
      const now = env.now();
      const i = s.frame;
      if (i < frames.length) {
        ws.send(wrap ? wrap(frames[i]!) : frames[i]!);
        this.framesSent++;
        // A server that stopped reading: what the socket holds unsent grows with every frame (server_not_reading).
        if (i % UNSENT_CHECK_FRAMES === 0 && (ws.bufferedAmount ?? 0) > INTAKE.unsentBytes)
          return link.violation('server_not_reading');
        // The user's last voiced sound has just been sent: the end of speech, whatever the server's endpointing.
        if (i === lastVoiced && s.eosAt === null) s.eosAt = now;
      } else if (explicitEos) {
        if (eos) ws.send(render(eos, this.ctx.vars));
        if (s.eosAt === null) s.eosAt = now;
        s.stage = 'thinking';
        return;
      } else {
        if (s.silenceSentMs >= VAD_MAX_TRAILING_MS) return;
        ws.send(silence);
        this.framesSent++;
        s.silenceSentMs += frameMs;
      }
      s.frame = i + 1;
      // frameDelay's rule, inlined: a call per frame measured ~7% more CPU per uplink frame (bench/frame-cost-run.ts,
      // 4 interleaved runs each, ratio to a bare timer 2.09 inlined against 2.24 called).
      let due = s.streamT0 + s.frame * frameMs;
      if (now - due > slipAfter) {
        s.streamT0 = now - s.frame * frameMs;
        due = now;
        this.ctx.count('audio_slips');
      }
      h.audio = env.setTimeout(step, due > now ? due - now : 0);
    };
    step();
  }

  /**
   * How long until frame k of a real-time stream whose clock started at `c.streamT0`. A microphone does not burst:
   * when the event loop ran more than 3 frames late, the stream slips (its clock restarts now, an audio_slip) instead
   * of catching up at once (a burst would exceed the server's audio rate limit and make the generator's lag look like
   * a device fault).
   */
  private frameDelay(c: { streamT0: number }, k: number, frameMs: number, now: number): number {
    const due = c.streamT0 + k * frameMs;
    if (now - due <= SLIP_AFTER_FRAMES * frameMs) return due > now ? due - now : 0;
    c.streamT0 = now - k * frameMs;
    this.ctx.count('audio_slips');
    return 0;
  }
}
