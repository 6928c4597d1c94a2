// The k6 side of the device model: metrics as k6 custom metrics, sockets from k6/websockets, timers from k6/timers,
// and the fleet layout (many devices per VU, stable ids, connects spread over a ramp, a hard stop at the end).
import { owesReturn } from '../../core/device-rules.ts';
import exec from 'k6/execution';
import { Counter, Gauge, Rate, Trend } from 'k6/metrics';
import { clearTimeout, setTimeout } from 'k6/timers';
import { WebSocket } from 'k6/websockets';
import http from 'k6/http';
import { makeAudioFrames } from '../../core/audio-frames.ts';
import type { OpusTable } from '../../core/opus.ts';
import { Device } from '../../core/device.ts';
import { FirstFrameProbe, type AudioFrames, type DeviceEnv, type SocketLike } from '../../core/device-env.ts';
import { DEVICE_METRICS, type DeviceMetricName, type MetricSink } from '../../core/metric-names.ts';
import { PhaseTracker, type FaultWindow } from '../../core/phases.ts';
import { profileFor } from '../../core/profiles.ts';
import { deviceRandom } from '../../core/rng.ts';
import { dialectOf, type RunConfig } from '../../core/run-config.ts';

// k6 resolves an imported binding of a Go module on every access: it rebuilds the module's export map and wraps the
// Go function in a fresh JS function (js/modules/gomodule.go GetBindingValue). Timers run per audio frame, so the
// bindings are read once here, at init, and the hot paths call these constants (GetBindingValue and the export map
// showed in the CPU profile of a 4,000-device run).
const kSetTimeout = setTimeout;
const kClearTimeout = clearTimeout;
const KWebSocket = WebSocket;

/** Creates every device metric; call in the init context (k6 requires it). */
export function createK6Metrics(): MetricSink {
  const m = {} as Record<DeviceMetricName, { add(v: number, tags?: Record<string, string>): void }>;
  for (const [name, kind] of Object.entries(DEVICE_METRICS) as [DeviceMetricName, string][]) {
    m[name] =
      kind === 'trend'
        ? new Trend(name, true)
        : kind === 'counter'
          ? new Counter(name)
          : kind === 'rate'
            ? new Rate(name)
            : new Gauge(name);
  }
  return { add: (name, value, tags) => m[name].add(value, tags) };
}

/** Reads a repository file by its path from the root (the shipped dialects); init context only, like open(). */
export function readRepoFile(repoPath: string): string {
  return open(import.meta.resolve(`../../${repoPath}`));
}

/** Loads the committed utterance, PCM and Opus; call in the init context (open() is only allowed there). */
export function loadUtterance(): AudioFrames {
  const pcm = open(import.meta.resolve('../../audio/utterance.pcm'), 'b');
  const bytes = open(import.meta.resolve('../../audio/utterance.opus'), 'b');
  const table = JSON.parse(open(import.meta.resolve('../../audio/utterance.opus.json'))) as OpusTable;
  return makeAudioFrames(pcm, { bytes, table });
}

export interface FleetHooks {
  /** When the network really died, for disconnect_detect_time (chaos runs). */
  linkDiedAt?: () => number | null;
  /** The timeline's faults as absolute windows (chaos runs): the VU's PhaseTracker tells phases and recovery. */
  windows?: FaultWindow[];
}

/**
 * What a VU's devices share: k6's sockets, clock and timers (the k6 functions themselves, no JS wrapper in between:
 * each is called once per audio frame), the metric sink and the audio.
 */
export function fleetEnv(metrics: MetricSink, audio: AudioFrames, hooks: FleetHooks = {}): Omit<DeviceEnv, 'random'> {
  return {
    openSocket: (url, headers, name) => new KWebSocket(url, null, { headers, tags: { name } }) as unknown as SocketLike,
    // Once per process and kind (an unmatched server message type): k6 prints it, the CLI's verdict names it.
    warn: (line) => console.warn(line),
    firstFrameProbe: new FirstFrameProbe(),
    now: Date.now,
    setTimeout: kSetTimeout as DeviceEnv['setTimeout'],
    clearTimeout: kClearTimeout,
    metrics,
    audio,
    linkDiedAt: hooks.linkDiedAt,
    // The dialect's provision call: k6's asynchronous request, so the VU's other devices go on meanwhile.
    request: (req, done) => {
      http
        .asyncRequest(req.method, req.url, req.body ?? null, {
          headers: req.headers,
          timeout: '10s',
          tags: { name: 'provision' },
        })
        .then(
          (r) =>
            done(r.status === 0 ? { error: r.error || 'no answer' } : { status: r.status, body: String(r.body ?? '') }),
          (e: unknown) => done({ error: String(e) }),
        );
    },
  };
}

/** A device's env: the shared part by prototype, its own random stream as the one own property. */
export function deviceEnv(shared: Omit<DeviceEnv, 'random'>, random: () => number): DeviceEnv {
  return Object.assign(Object.create(shared) as Omit<DeviceEnv, 'random'>, { random });
}

/** This VU's share of the fleet (device indexes [first, last)) and when the run ends; null when it has none. */
export function vuSlice(cfg: RunConfig): { vu: number; first: number; last: number; endAt: number } | null {
  // The shard comes from the scenario's own iteration counter, not the VU id: VU ids are shared by all scenarios,
  // so with a chaos VU beside the fleet, idInTest 1 may belong to the chaos scenario.
  const vu = exec.scenario.iterationInTest;
  const first = vu * cfg.devicesPerVu;
  const last = Math.min(cfg.devices, first + cfg.devicesPerVu);
  const endAt = exec.scenario.startTime + cfg.durationMs;
  // A ramping executor may start a second iteration at the very end: the fleet runs once per VU.
  if (first >= last || Date.now() >= endAt - 500) return null;
  return { vu, first, last, endAt };
}

/** Phases of a chaos run, judged on this VU's own devices: when they are back after each fault (null: no faults). */
export function phaseTracker(metrics: MetricSink, hooks: FleetHooks): PhaseTracker | null {
  return hooks.windows?.length
    ? new PhaseTracker(hooks.windows, (w, profile, ms, back, cut) => {
        metrics.add('recovery_time', ms, { profile, fault: w.label });
        if (!back) metrics.add('recoveries_failed', 1, { profile, fault: w.label });
        // Not back when the run ended: its wait is a lower bound (the report marks it), not a recovery that failed.
        if (cut) metrics.add('recoveries_cut', 1, { profile, fault: w.label });
      })
    : null;
}

/** Runs this VU's share of the fleet until the run's end, then stops every device. */
export function runFleetVu(cfg: RunConfig, metrics: MetricSink, audio: AudioFrames, hooks: FleetHooks = {}): void {
  const slice = vuSlice(cfg);
  if (!slice) return;
  const { vu, first, last, endAt } = slice;
  const now = () => Date.now();
  const devices: Device[] = [];
  const shared = fleetEnv(metrics, audio, hooks);
  const tracker = phaseTracker(metrics, hooks);
  if (tracker) shared.phase = (from, to) => tracker.phase(from, to);
  for (let i = first; i < last; i++) {
    const id = `${cfg.idPrefix}-${i}`;
    const env = deviceEnv(shared, deviceRandom(cfg.seed, id));
    const profile = profileFor(i, cfg.devices, cfg.profiles);
    const d = new Device(
      {
        id,
        baseUrl: cfg.targetUrls[i % cfg.targetUrls.length]!,
        provisionUrl: cfg.provisionUrl,
        token: cfg.token,
        profile,
        dialect: dialectOf(profile, cfg.dialects),
        wake: cfg.wake,
      },
      env,
    );
    // Spread connects evenly over the ramp, by global index, so every VU ramps together.
    d.start(Math.max(0, (i / cfg.devices) * cfg.rampMs - (now() - exec.scenario.startTime)));
    metrics.add('devices_started', 1, { profile: d.profile.name });
    devices.push(d);
  }
  // A probe every second: how late it fires is this VU's event-loop lag (the generator's own delay on every
  // timestamp it takes); the same tick reports how many of its devices are connected. Once a second, because a
  // sample costs: at one device per VU, 1000 VUs probing 4 times a second took 15% of a core more.
  const PROBE_MS = 1000;
  const byProfile = new Map<string, Record<string, string>>();
  for (const d of devices)
    if (!byProfile.has(d.profile.name)) byProfile.set(d.profile.name, { vu: String(vu), profile: d.profile.name });
  let probe: unknown = null;
  // The same tick reports the uplink frames its devices sent (the denominator of audio_slips): one sample a second,
  // not one per frame.
  const reportFrames = () => {
    let frames = 0;
    for (let i = 0; i < devices.length; i++) frames += devices[i]!.takeFramesSent();
    if (frames) metrics.add('audio_frames', frames, {});
  };
  // Connected devices per profile among those that owe a link back after a fault (core/device-rules.ts owesReturn).
  const owes = devices.map((d) => owesReturn(dialectOf(d.profile, cfg.dialects)));
  const persistentConnected = () => {
    const m = new Map<string, number>();
    for (let i = 0; i < devices.length; i++) {
      const d = devices[i]!;
      if (!owes[i]) continue;
      m.set(d.profile.name, (m.get(d.profile.name) ?? 0) + (d.connected ? 1 : 0));
    }
    return m;
  };
  const tick = (due: number) => {
    const t = now();
    metrics.add('vu_loop_lag', Math.max(0, t - due), {});
    // Connected devices per VU and profile, always tagged (the charts sum the tagged series over VUs and profiles).
    // Indexed: k6's engine allocates an iterator result per for-of step, and this runs every second per VU.
    for (const [profile, tags] of byProfile) {
      let n = 0;
      for (let i = 0; i < devices.length; i++) if (devices[i]!.connected && devices[i]!.profile.name === profile) n++;
      metrics.add('devices_connected', n, tags);
    }
    reportFrames();
    if (tracker) tracker.observe(t, persistentConnected());
    probe = kSetTimeout(() => tick(t + PROBE_MS), PROBE_MS);
  };
  const firstDue = now() + PROBE_MS;
  probe = kSetTimeout(() => tick(firstDue), PROBE_MS);
  kSetTimeout(
    () => {
      kClearTimeout(probe as number);
      tracker?.finish(now());
      for (const d of devices) d.stop();
      reportFrames();
    },
    Math.max(0, endAt - now()),
  );
}

/** k6 options for a fleet: one iteration per VU, bounded by the run's duration. */
export function fleetScenario(cfg: RunConfig, extra: Record<string, unknown> = {}) {
  return {
    executor: 'per-vu-iterations',
    vus: cfg.vus,
    iterations: 1,
    // Devices stop themselves at DURATION; the slack only bounds handshakes that never complete.
    maxDuration: `${Math.ceil(cfg.durationMs / 1000) + 15}s`,
    gracefulStop: '5s',
    ...extra,
  };
}
