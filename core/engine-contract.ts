// The contract between k6 and the native device engine (engine/, docs/engine.md), written once: the `start` a VU
// sends (its slice of the fleet, the profiles and dialects unchanged, every bound and rule of core/ as data) and how
// the engine's records become the same metrics, with the same names and tags, as the k6 device records. The k6 side
// (scenarios/lib/engine-fleet.ts) and the conformance replay (test/unit/conformance.test.ts) both use it.
import { FLAP_MS, INTAKE, KEEPALIVE_GRID_MS } from './device-link.ts';
import {
  BARGE_IN_WAIT_MS,
  LATE_AUDIO_GRACE_MS,
  MAX_REPLY_AUDIO_MS,
  OVERRUN_SLACK_BYTES,
  PLAYBACK_GAP_TOLERANCE_MS,
  SESSION_STALL_MS,
  SLIP_AFTER_FRAMES,
  VAD_MAX_TRAILING_MS,
} from './device-session.ts';
import { DEVICE_RULES, violationKeepsLink } from './device-rules.ts';
import { END_DUE_MS, RECONNECT_CENSOR_MS, WAKE_ACK_TIMEOUT_MS } from './verdict.ts';
import { typeField, UNMATCHED_NOTE, VIOLATION_NOTE, BoundedLabels } from './dialect.ts';
import { isDeviceMetric, type MetricSink } from './metric-names.ts';
import { profileFor, type Profile } from './profiles.ts';
import { closeCodeLabel, DEFAULTS } from './protocol.ts';
import { dialectOf, type RunConfig } from './run-config.ts';
import { deviceVars, type AudioFrames } from './device-env.ts';
import type { OpusTable } from './opus.ts';
import type { Phase } from './phases.ts';
import { TIMER_LAG_BOUNDS_MS } from './timer-lag.ts';

/** The Opus packets' frame table, from the clip already loaded (no second read of the file). */
function opusTable(audio: AudioFrames): Pick<OpusTable, 'frame_ms' | 'sizes' | 'silent' | 'silence_size'> {
  const clip = audio.opus();
  return {
    frame_ms: clip.frameMs,
    sizes: clip.packets.map((p) => p.byteLength),
    silent: clip.silent,
    silence_size: clip.silence.byteLength,
  };
}

/** The device's bounds and windows, from the constants of core/: the engine holds none of its own. */
const ENGINE_TIMING = {
  session_stall_ms: SESSION_STALL_MS,
  barge_in_wait_ms: BARGE_IN_WAIT_MS,
  vad_max_trailing_ms: VAD_MAX_TRAILING_MS,
  playback_gap_tolerance_ms: PLAYBACK_GAP_TOLERANCE_MS,
  max_reply_audio_ms: MAX_REPLY_AUDIO_MS,
  overrun_slack_bytes: OVERRUN_SLACK_BYTES,
  slip_after_frames: SLIP_AFTER_FRAMES,
  wake_ack_timeout_ms: WAKE_ACK_TIMEOUT_MS,
  end_due_ms: END_DUE_MS,
  late_audio_grace_ms: LATE_AUDIO_GRACE_MS,
  resume_grace_ms: DEFAULTS.resume_grace_ms,
  reconnect_censor_ms: RECONNECT_CENSOR_MS,
  flap_ms: FLAP_MS,
  keepalive_grid_ms: KEEPALIVE_GRID_MS,
};

/** Where the committed utterance lives on disk (the engine reads it itself; k6's open() gives bytes, not a path). */
export interface AudioPaths {
  pcm: string;
  opus: string;
}

/** The start message for devices [first, last): everything the engine needs, as data (profiles and dialects unchanged). */
export function engineStart(
  cfg: Pick<RunConfig, 'devices' | 'profiles' | 'dialects' | 'rampMs' | 'idPrefix' | 'targetUrls' | 'token' | 'seed'> &
    Pick<RunConfig, 'wake' | 'durationMs' | 'tls'> &
    Partial<Pick<RunConfig, 'provisionUrl'>>,
  audio: AudioFrames,
  paths: AudioPaths,
  first: number,
  last: number,
  startedAt: number,
  now: number,
) {
  const profiles: Profile[] = [];
  const dialects: Record<string, unknown> = {};
  const devices = [];
  for (let i = first; i < last; i++) {
    const profile = profileFor(i, cfg.devices, cfg.profiles);
    let p = profiles.indexOf(profile);
    if (p < 0) p = profiles.push(profile) - 1;
    const d = dialectOf(profile, cfg.dialects);
    dialects[d.name] ??= { ...d, type_field: typeField(d) };
    // Connects spread evenly over the ramp, by global index, so every VU ramps together.
    const delay = Math.max(0, (i / cfg.devices) * cfg.rampMs - (now - startedAt));
    const id = `${cfg.idPrefix}-${i}`;
    devices.push({
      id,
      url: cfg.targetUrls[i % cfg.targetUrls.length]!,
      profile: p,
      dialect: d.name,
      delay_ms: delay,
      vars: deviceVars(id, profile, d),
    });
  }
  return {
    type: 'start',
    devices,
    profiles,
    dialects,
    token: cfg.token ?? '',
    seed: cfg.seed,
    connect_timeout_ms: 10_000,
    intake: INTAKE,
    timing: ENGINE_TIMING,
    rules: DEVICE_RULES,
    tls: cfg.tls,
    provision_url: cfg.provisionUrl ?? '',
    wake: cfg.wake,
    // The utterance by path, and which of its frames an energy VAD hears as silent for each profile's frame size
    // (core/audio-frames.ts: the one VAD rule); none when there are no wakes.
    audio: {
      pcm_path: paths.pcm,
      opus_path: paths.opus,
      opus: cfg.wake.mode === 'off' ? null : opusTable(audio),
      silent:
        cfg.wake.mode === 'off'
          ? {}
          : Object.fromEntries(
              [...new Set(profiles.map((p) => p.frame_bytes))].map((fb) => [String(fb), audio.frames(fb).silent]),
            ),
    },
    end_in_ms: startedAt + cfg.durationMs - now,
    // The run's end on the wall clock the engine's timestamps share (records' from/to are compared with k6's): its
    // devices observe until then (docs/engine.md).
    end_at: startedAt + cfg.durationMs,
    timer_lag_bounds_ms: TIMER_LAG_BOUNDS_MS,
  };
}

/** A record from the engine: [name, value, profile, from, to, phase mode, extra] (engine/records.go). */
export type EngineRecord = [
  string,
  number,
  string,
  number,
  number,
  0 | 1 | 2,
  {
    code?: number;
    cause?: string;
    kind?: string;
    reason?: string;
    type?: unknown;
    error_code?: unknown;
    text?: string;
  } | null,
];

const UNMATCHED_TYPES = new BoundedLabels(16);
/** The `code` tag of protocol_errors: what the server's error messages say, bounded as on the k6 device. */
const ERROR_CODES = new BoundedLabels(16);

/** What the conversion needs from its side: where samples go, the phase of a span, when the network died. */
export interface RecordTarget {
  metrics: MetricSink;
  phase: (from: number, to: number) => Phase;
  linkDiedAt?: () => number | null;
  /** A rare line a person should see (an unmatched type, a violation), once per kind per process. */
  warn: (line: string) => void;
}

/**
 * Records the engine's records as device metrics. Labels that follow a rule of core/ (close-code ranges, bounded
 * message types, chaos phases) are made here, from the engine's raw fields. A name outside DEVICE_METRICS is refused
 * (the engine's names are checked against it in test/unit/engine-metrics.test.ts as well).
 */
export class EngineRecords {
  private readonly seen = new Set<string>();

  constructor(private readonly to: RecordTarget) {}

  record(r: EngineRecord): void {
    // Read by index: in k6's JS runtime (sobek) destructuring an array walks its iterator, a result object per element
    // (a fifth of k6's allocations at 10,000 idle devices, 2026-12-07 profile).
    const name = r[0],
      value = r[1],
      profile = r[2],
      from = r[3],
      to = r[4],
      mode = r[5],
      extra = r[6];
    const { metrics, phase } = this.to;
    if (name === '_link_lost') {
      const died = this.to.linkDiedAt?.() ?? null;
      if (died !== null && died >= from && died <= to) metrics.add('disconnect_detect_time', to - died, { profile });
      return;
    }
    if (!isDeviceMetric(name)) {
      if (!this.seen.has(`n:${name}`)) {
        this.seen.add(`n:${name}`);
        this.to.warn(`wakestorm-engine: a record named ${JSON.stringify(name)} is no device metric; dropped`);
      }
      return;
    }
    // Uplink frames sent, the denominator of audio_slips: untagged, as the k6 fleet reports them.
    if (name === 'audio_frames') return metrics.add('audio_frames', value, {});
    const tags: Record<string, string> = { profile };
    if (mode === 1) tags.chaos = phase(from, to);
    else if (mode === 2 && phase(from, to) !== 'steady') return;
    if (extra) {
      if (extra.code !== undefined) tags.code = closeCodeLabel(extra.code);
      if (extra.cause) tags.cause = extra.cause;
      if (extra.kind) tags.kind = extra.kind;
      if (extra.reason) tags.reason = extra.reason;
      if (name === 'protocol_errors') tags.code = ERROR_CODES.label(extra.error_code, 'unknown');
      if (name === 'unmatched_messages') {
        const type = UNMATCHED_TYPES.label(extra.type, 'untyped');
        tags.type = type;
        if (!this.seen.has(type)) {
          this.seen.add(type);
          this.to.warn(`${UNMATCHED_NOTE}${type} (the dialect matches no step of it): ${extra.text ?? ''}`);
        }
      }
      if (name === 'protocol_violations' && extra.kind && !this.seen.has(`v:${extra.kind}`)) {
        this.seen.add(`v:${extra.kind}`);
        this.to.warn(
          `${VIOLATION_NOTE}${extra.kind}: the server broke the protocol; ${violationKeepsLink(extra.kind) ? 'the device ignores the message' : 'the device closes the link'}`,
        );
      }
    }
    metrics.add(name, value, tags);
  }
}
