// The k6 side of the native device engine (engine/, docs/engine.md): a VU hands its share of the fleet to the engine
// over one control socket and records what the engine sends back as the same metrics, with the same names and tags,
// as the k6 device would (scenarios/lib/k6-fleet.ts). Labels that follow a rule of core/ (close-code ranges, bounded
// message types, chaos phases) are made here, from the engine's raw fields.
import { WebSocket } from 'k6/websockets';
import { clearTimeout, setTimeout } from 'k6/timers';
import { FLAP_MS, INTAKE, KEEPALIVE_GRID_MS } from '../../core/device-link.ts';
import {
  BARGE_IN_WAIT_MS,
  MAX_REPLY_AUDIO_MS,
  OVERRUN_SLACK_BYTES,
  PLAYBACK_GAP_TOLERANCE_MS,
  SESSION_STALL_MS,
  SLIP_AFTER_FRAMES,
  VAD_MAX_TRAILING_MS,
} from '../../core/device-session.ts';
import { RECONNECT_CENSOR_MS, WAKE_ACK_TIMEOUT_MS } from '../../core/verdict.ts';
import { typeField, UNMATCHED_NOTE, BoundedLabels } from '../../core/dialect.ts';
import type { MetricSink, DeviceMetricName } from '../../core/metric-names.ts';
import { profileFor, type Profile } from '../../core/profiles.ts';
import { closeCodeLabel, DEFAULTS } from '../../core/protocol.ts';
import { dialectOf, type RunConfig } from '../../core/run-config.ts';
import { deviceVars, type AudioFrames } from '../../core/device-env.ts';
import type { OpusTable } from '../../core/opus.ts';
import { TIMER_LAG_BOUNDS_MS, timerLagLabel } from '../../core/timer-lag.ts';
import { phaseTracker, vuSlice, type FleetHooks } from './k6-fleet.ts';

/** The committed utterance on disk, PCM and Opus: the engine reads them itself (k6's open() gives bytes, not a path). */
const audioPath = (name: string) =>
  decodeURIComponent(import.meta.resolve(`../../audio/${name}`).replace(/^file:\/\//, ''));
const UTTERANCE_PATH = audioPath('utterance.pcm');
const OPUS_PATH = audioPath('utterance.opus');

/** The Opus packets' frame table, from the clip k6-fleet already loaded (no second read of the file). */
function opusTable(audio: AudioFrames): Pick<OpusTable, 'frame_ms' | 'sizes' | 'silent' | 'silence_size'> {
  const clip = audio.opus();
  return {
    frame_ms: clip.frameMs,
    sizes: clip.packets.map((p) => p.byteLength),
    silent: clip.silent,
    silence_size: clip.silence.byteLength,
  };
}

/** A record from the engine: [name, value, profile, from, to, phase mode, extra]. */
type EngineRecord = [
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

interface EngineBatch {
  type: 'started' | 'batch' | 'stopped' | 'error';
  message?: string;
  records?: EngineRecord[];
  dropped?: number;
  connected?: Record<string, number>;
  lag_ms?: number;
  lag_counts?: number[];
}

const UNMATCHED_TYPES = new BoundedLabels(16);
/** The `code` tag of protocol_errors: what the server's error messages say, bounded as on the k6 device. */
const ERROR_CODES = new BoundedLabels(16);
const SEEN = new Set<string>();

/** The start message for devices [first, last): everything the engine needs, as data (profiles and dialects unchanged). */
function engineStart(cfg: RunConfig, audio: AudioFrames, first: number, last: number, startedAt: number, now: number) {
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
    // The device's bounds and windows, from the constants of core/: the engine holds none of its own.
    timing: {
      session_stall_ms: SESSION_STALL_MS,
      barge_in_wait_ms: BARGE_IN_WAIT_MS,
      vad_max_trailing_ms: VAD_MAX_TRAILING_MS,
      playback_gap_tolerance_ms: PLAYBACK_GAP_TOLERANCE_MS,
      max_reply_audio_ms: MAX_REPLY_AUDIO_MS,
      overrun_slack_bytes: OVERRUN_SLACK_BYTES,
      slip_after_frames: SLIP_AFTER_FRAMES,
      wake_ack_timeout_ms: WAKE_ACK_TIMEOUT_MS,
      resume_grace_ms: DEFAULTS.resume_grace_ms,
      reconnect_censor_ms: RECONNECT_CENSOR_MS,
      flap_ms: FLAP_MS,
      keepalive_grid_ms: KEEPALIVE_GRID_MS,
    },
    wake: cfg.wake,
    // The utterance by path, and which of its frames an energy VAD hears as silent for each profile's frame size
    // (core/audio-frames.ts: the one VAD rule); none when there are no wakes.
    audio: {
      pcm_path: UTTERANCE_PATH,
      opus_path: OPUS_PATH,
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

/** Runs this VU's share of the fleet in the engine until the run's end. */
export function runEngineVu(
  cfg: RunConfig,
  metrics: MetricSink,
  audio: AudioFrames,
  hooks: FleetHooks,
  startedAt: number,
): void {
  const slice = vuSlice(cfg);
  if (!slice) return;
  const { vu, first, last, endAt } = slice;
  const tracker = phaseTracker(metrics, hooks);
  const phase = (from: number, to: number) => tracker?.phase(from, to) ?? 'steady';
  const builtAt = Date.now();
  const start = engineStart(cfg, audio, first, last, startedAt, builtAt);
  for (const d of start.devices) metrics.add('devices_started', 1, { profile: start.profiles[d.profile]!.name });
  const mixed = start.profiles.length > 1;
  const ws = new WebSocket(cfg.engineUrl!);
  let done = false;
  let giveUp: ReturnType<typeof setTimeout> | null = null;
  const finish = () => {
    done = true;
    if (giveUp !== null) clearTimeout(giveUp);
    ws.close();
  };
  // Its times are relative to now, so they count from the send: in a large ramp the control socket's connect can
  // take hundreds of ms (measured: the engine's end of the run 580 ms past k6's at 10,000 devices).
  ws.onopen = () => {
    const late = Date.now() - builtAt;
    for (const d of start.devices) d.delay_ms = Math.max(0, d.delay_ms - late);
    start.end_in_ms -= late;
    ws.send(JSON.stringify(start));
  };
  ws.onerror = () => {};
  ws.onclose = () => {
    if (!done)
      console.error(`wakestorm-engine: the control socket of VU ${vu} closed before the run's end: the engine is gone`);
    done = true;
  };
  ws.onmessage = (ev) => {
    const m = JSON.parse(typeof ev?.data === 'string' ? ev.data : '{}') as EngineBatch;
    if (m.type === 'error') {
      console.error(m.message);
      finish();
      return;
    }
    for (const r of m.records ?? []) record(r);
    if (m.dropped)
      console.warn(`wakestorm-engine: ${m.dropped} record(s) dropped in one batch (a flood past the batch bound)`);
    if (m.connected) {
      const t = Date.now();
      if (m.lag_ms !== undefined && m.type === 'batch') metrics.add('vu_loop_lag', m.lag_ms, {});
      const counts = m.lag_counts ?? [];
      for (let i = 0; i < counts.length && i <= TIMER_LAG_BOUNDS_MS.length; i++)
        if (counts[i]) metrics.add('timer_firings', counts[i]!, { lag_le: timerLagLabel(i) });
      if (mixed)
        for (const [profile, n] of Object.entries(m.connected))
          metrics.add('devices_connected', n, { vu: String(vu), profile });
      else
        metrics.add(
          'devices_connected',
          Object.values(m.connected).reduce((a, b) => a + b, 0),
          { vu: String(vu) },
        );
      tracker?.observe(t, new Map(Object.entries(m.connected)));
    }
    if (m.type === 'stopped') finish();
  };
  function record([name, value, profile, from, to, mode, extra]: EngineRecord): void {
    if (name === '_link_lost') {
      const died = hooks.linkDiedAt?.() ?? null;
      if (died !== null && died >= from && died <= to) metrics.add('disconnect_detect_time', to - died, { profile });
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
        if (!SEEN.has(type)) {
          SEEN.add(type);
          console.warn(`${UNMATCHED_NOTE}${type} (the dialect matches no step of it): ${extra.text ?? ''}`);
        }
      }
      if (name === 'protocol_violations' && extra.kind && !SEEN.has(`v:${extra.kind}`)) {
        SEEN.add(`v:${extra.kind}`);
        console.warn(
          `wakestorm-violation kind=${extra.kind}: the server broke the protocol; the device closes the link`,
        );
      }
    }
    metrics.add(name as DeviceMetricName, value, tags);
  }
  setTimeout(
    () => {
      tracker?.finish(Date.now());
      if (done) return;
      ws.send(JSON.stringify({ type: 'stop' }));
      // The engine answers a stop at once; a control socket still open after this is closed anyway. The timer is
      // cleared at the answer: a pending timer keeps the VU's iteration (and k6) running.
      giveUp = setTimeout(() => {
        if (!done) {
          done = true;
          ws.close();
        }
      }, 10_000);
    },
    Math.max(0, endAt - Date.now()),
  );
}
