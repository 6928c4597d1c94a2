// One voice session: energy VAD on the uplink, the fake STT → LLM → TTS pipeline, the paced TTS stream, and what a lost link does to it.
import {
  DEFAULTS,
  MAX_TTS_CHUNK_BYTES,
  PCM_SAMPLE_RATE,
  type SessionEndReason,
  type SessionStage,
} from '../core/protocol.ts';
import type { Reply } from './audio.ts';
import { pcmDurationMs, pcmRms } from '../core/pcm.ts';
import type { ServerConfig } from './config.ts';
import type { ServerMetrics, SessionOutcome } from './metrics.ts';

/** What a session needs from whoever holds the device's link now; the link may change on resume. */
export interface SessionLink {
  /** Sends a JSON message if the device is connected; returns false when it is not. */
  sendJson(msg: object): boolean;
  /** Sends a binary frame if connected; returns false when it is not (or the socket was cut as a slow reader). */
  sendBinary(buf: Buffer): boolean;
  /** Called once when the session has ended, whatever the reason. */
  sessionDone(s: Session): void;
  /** The reply's audio: PCM chunks (default) or the reply's Opus packets. */
  readonly codec?: 'pcm' | 'opus';
}

/** Internal stage: `playing` is the wait for playback_complete after the last TTS byte. */
type Stage = 'listening' | 'thinking' | 'speaking' | 'playing';

/**
 * A session as it moves to another worker of the server (server/cluster.ts) with its device: what a resume needs.
 * The link is already lost when a session moves, so no stream or playback is in flight; a pipeline may be.
 */
export interface SessionSnapshot {
  id: string;
  wakeId: string;
  reply: number;
  stage: Stage;
  ended: boolean;
  interruptedPending: boolean;
  transcriptSent: boolean;
  replySent: boolean;
  heardVoice: boolean;
  waitForVoice: boolean;
  /** How long ago the end of speech started the pipeline (ms), while thinking. */
  pipelineElapsedMs: number | null;
}

/** Extra time a device gets, beyond the reply's length, to report playback_complete. */
const PLAYBACK_GRACE_MS = 10_000;
/** Chunks sent ahead of real time so a device's jitter buffer can fill. */
const TTS_LEAD_CHUNKS = 2;

export class Session {
  stage: Stage = 'listening';
  ended = false;
  /** Lost while the user was still speaking: ended as interrupted, reported on resume. */
  interruptedPending = false;
  private transcriptSent = false;
  private replySent = false;
  private speechMs = 0;
  private silenceRunMs = 0;
  /** Voice heard in this session (with waitForVoice, the VAD counts nothing before it). */
  heardVoice = false;
  private audioTimer: NodeJS.Timeout | null = null;
  private pipelineTimer: NodeJS.Timeout | null = null;
  private playbackTimer: NodeJS.Timeout | null = null;
  private streamTimer: NodeJS.Timeout | null = null;
  private streamGen = 0;
  /** When the pipeline started (performance.now()), while thinking. */
  private pipelineT0: number | null = null;

  constructor(
    readonly id: string,
    readonly wakeId: string,
    private readonly reply: Reply,
    private readonly cfg: ServerConfig,
    private readonly metrics: ServerMetrics,
    private link: SessionLink,
    /**
     * The device's microphone streams while it listens, speech or not (xiaozhi): the VAD waits for voice before it
     * counts the silence that ends speech. Without it (wakestorm), speech follows the wake at once.
     */
    private readonly waitForVoice = false,
    /** A session that moved here from another worker: it goes on where it was, with no new session_started. */
    restored: SessionSnapshot | null = null,
  ) {
    metrics.sessionsActive.inc();
    if (restored) {
      this.stage = restored.stage;
      this.interruptedPending = restored.interruptedPending;
      this.transcriptSent = restored.transcriptSent;
      this.replySent = restored.replySent;
      this.heardVoice = restored.heardVoice;
      if (restored.ended) this.markEnded();
      else if (this.stage === 'thinking') this.runPipeline(performance.now() - (restored.pipelineElapsedMs ?? 0));
      else if (this.stage === 'playing') this.stage = 'speaking';
      else if (this.stage === 'listening') this.armAudioTimer();
      return;
    }
    metrics.sessionsStarted.inc();
    this.link.sendJson({ type: 'session_started', session_id: id, wake_id: wakeId });
    this.armAudioTimer();
  }

  /** A session that moved here from another worker of the server (server/cluster.ts). */
  static restore(
    snap: SessionSnapshot,
    replies: readonly Reply[],
    cfg: ServerConfig,
    metrics: ServerMetrics,
    link: SessionLink,
  ): Session {
    const reply = replies[snap.reply % replies.length]!;
    return new Session(snap.id, snap.wakeId, reply, cfg, metrics, link, snap.waitForVoice, snap);
  }

  /**
   * Hands this session to another worker (its link is already lost): every timer stops and it leaves this worker's
   * active count without an outcome; the worker that takes it counts it from now on.
   */
  handOff(replies: readonly Reply[]): SessionSnapshot {
    const snap: SessionSnapshot = {
      id: this.id,
      wakeId: this.wakeId,
      reply: Math.max(0, replies.indexOf(this.reply)),
      stage: this.stage,
      ended: this.ended,
      interruptedPending: this.interruptedPending,
      transcriptSent: this.transcriptSent,
      replySent: this.replySent,
      heardVoice: this.heardVoice,
      waitForVoice: this.waitForVoice,
      pipelineElapsedMs: this.pipelineT0 === null ? null : performance.now() - this.pipelineT0,
    };
    this.clear('audio');
    this.clear('pipeline');
    this.clear('playback');
    this.stopStream();
    if (!this.ended) this.metrics.sessionsActive.dec();
    this.ended = true;
    return snap;
  }

  /** Ended before it moved (an interrupted turn a resume still reports): counted where it ended. */
  private markEnded(): void {
    this.ended = true;
    this.metrics.sessionsActive.dec();
  }

  /** What the fake LLM answers (xiaozhi's sentence_start shows it). */
  get replyText(): string {
    return this.reply.text;
  }

  /** The stage a resuming device is told about. */
  get publicStage(): SessionStage {
    return this.stage === 'playing' ? 'speaking' : this.stage;
  }

  /** True while the turn is in flight: the user speaks or the server owes a reply (drain waits for these). */
  get active(): boolean {
    return !this.ended;
  }

  /**
   * One uplink PCM frame (already checked for size). Audio after the end of speech is dropped silently. Returns
   * whether the frame was voice.
   */
  onAudio(frame: Buffer): boolean {
    if (this.ended || this.stage !== 'listening') return false;
    this.armAudioTimer();
    const ms = pcmDurationMs(frame.length);
    const voiced = pcmRms(frame) >= this.cfg.vadThreshold;
    if (voiced) this.heardVoice = true;
    else if (this.waitForVoice && !this.heardVoice) return false;
    this.speechMs += ms;
    if (!voiced) this.silenceRunMs += ms;
    else this.silenceRunMs = 0;
    if (this.silenceRunMs >= this.cfg.vadSilenceMs || this.speechMs >= DEFAULTS.max_speech_ms) this.endOfSpeech();
    return voiced;
  }

  /** The device says the user stopped speaking; ignored once the VAD already decided. */
  endOfSpeech(): void {
    if (this.ended || this.stage !== 'listening') return;
    this.clear('audio');
    this.stage = 'thinking';
    this.runPipeline(performance.now());
  }

  /**
   * The fake STT → LLM → TTS from an end of speech at t0 (performance.now()); steps already done (a session that moved
   * mid-pipeline) are not repeated. Each stage is due at a fixed time after the end of speech: chained timers would
   * each add their own lateness (about a millisecond apiece), and response_latency would drift from stt + llm + tts.
   */
  private runPipeline(t0: number): void {
    this.pipelineT0 = t0;
    const at = (dueMs: number, fn: () => void) =>
      (this.pipelineTimer = setTimeout(fn, Math.max(0, t0 + dueMs - performance.now())));
    const { sttMs, llmMs, ttsMs } = this.cfg;
    const speak = () =>
      at(sttMs + llmMs + ttsMs, () => {
        this.pipelineTimer = null;
        this.pipelineT0 = null;
        this.stage = 'speaking';
        this.startStream();
      });
    const answer = () =>
      at(sttMs + llmMs, () => {
        this.replySent = true;
        this.link.sendJson({ type: 'llm_response', session_id: this.id, text: this.reply.text });
        speak();
      });
    if (this.replySent) speak();
    else if (this.transcriptSent) answer();
    else
      at(sttMs, () => {
        this.transcriptSent = true;
        this.link.sendJson({ type: 'transcript', session_id: this.id, text: this.reply.transcript });
        answer();
      });
  }

  playbackComplete(): void {
    if (this.ended) return;
    // A device that stops listening before the stream ends still completes its turn.
    if (this.stage === 'speaking' || this.stage === 'playing') this.end('complete');
  }

  /** Ends the session and tells the device (if it is still there). */
  end(reason: SessionEndReason): void {
    if (this.ended) return;
    this.finish(reason);
    this.link.sendJson({ type: 'session_end', session_id: this.id, reason });
  }

  /** The device's link died. Returns nothing; the session keeps what a resume needs. */
  onLinkLost(): void {
    if (this.ended) return;
    this.stopStream();
    this.clear('playback');
    if (this.stage === 'listening') {
      // The user was still speaking: that turn cannot be recovered.
      this.interruptedPending = true;
      this.finish('interrupted');
    }
  }

  /** The device came back with its resume token, on a new link. */
  onResumed(link: SessionLink): void {
    this.link = link;
    if (this.interruptedPending) {
      this.interruptedPending = false;
      this.link.sendJson({ type: 'session_end', session_id: this.id, reason: 'interrupted' });
      return;
    }
    if (this.ended) return;
    // Replay the reply from the start: what was already said, then the rest as it comes.
    if (this.transcriptSent)
      this.link.sendJson({ type: 'transcript', session_id: this.id, text: this.reply.transcript });
    if (this.replySent) this.link.sendJson({ type: 'llm_response', session_id: this.id, text: this.reply.text });
    if (this.stage === 'speaking' || this.stage === 'playing') {
      this.stage = 'speaking';
      this.startStream();
    }
  }

  /** The device state expired, or the device started over without resuming. */
  discard(): void {
    if (!this.ended) this.finish('lost');
  }

  private finish(outcome: SessionOutcome): void {
    this.ended = true;
    this.clear('audio');
    this.clear('pipeline');
    this.clear('playback');
    this.stopStream();
    this.metrics.sessionEnded(outcome);
    this.link.sessionDone(this);
  }

  private armAudioTimer(): void {
    if (this.audioTimer) this.audioTimer.refresh();
    else this.audioTimer = setTimeout(() => this.end('timeout'), this.cfg.noAudioTimeoutMs);
  }

  private clear(which: 'audio' | 'pipeline' | 'playback'): void {
    const key = `${which}Timer` as 'audioTimer' | 'pipelineTimer' | 'playbackTimer';
    const t = this[key];
    if (t) clearTimeout(t);
    this[key] = null;
  }

  private stopStream(): void {
    this.streamGen++;
    if (this.streamTimer) clearTimeout(this.streamTimer);
    this.streamTimer = null;
  }

  /** The reply as the link's codec sends it: PCM in chunks of at most MAX_TTS_CHUNK_BYTES, or Opus packets. */
  private replyChunks(): { chunks: Buffer[]; chunkMs: number; bytes: number; durationMs: number } {
    if (this.link.codec === 'opus') {
      const chunks = this.reply.opus;
      return { chunks, chunkMs: 60, bytes: chunks.reduce((a, c) => a + c.length, 0), durationMs: chunks.length * 60 };
    }
    const pcm = this.reply.pcm;
    const chunks: Buffer[] = [];
    for (let off = 0; off < pcm.length; off += MAX_TTS_CHUNK_BYTES)
      chunks.push(pcm.subarray(off, Math.min(pcm.length, off + MAX_TTS_CHUNK_BYTES)));
    return {
      chunks,
      chunkMs: pcmDurationMs(MAX_TTS_CHUNK_BYTES),
      bytes: pcm.length,
      durationMs: pcmDurationMs(pcm.length),
    };
  }

  /** Streams the whole reply from its first byte, paced at real time (after a small lead) or as a burst. */
  private startStream(): void {
    this.stopStream();
    const { chunks, chunkMs, bytes, durationMs } = this.replyChunks();
    if (!this.link.sendJson({ type: 'tts_stream_start', session_id: this.id, sample_rate: PCM_SAMPLE_RATE, bytes }))
      return;
    const gen = this.streamGen;
    const t0 = performance.now();
    let k = 0;
    const step = (): void => {
      if (gen !== this.streamGen || this.ended) return;
      while (k < chunks.length) {
        if (!this.link.sendBinary(chunks[k]!)) return; // link gone or cut: a resume restarts the stream
        k++;
        if (this.cfg.ttsPace === 'realtime' && k < chunks.length && k >= TTS_LEAD_CHUNKS) {
          const due = t0 + (k - TTS_LEAD_CHUNKS + 1) * chunkMs;
          this.streamTimer = setTimeout(step, Math.max(0, due - performance.now()));
          return;
        }
      }
      this.streamTimer = null;
      this.stage = 'playing';
      this.playbackTimer = setTimeout(() => this.end('timeout'), durationMs + PLAYBACK_GRACE_MS);
      this.link.sendJson({ type: 'tts_stream_end', session_id: this.id, chunks: chunks.length, bytes });
    };
    step();
  }
}
