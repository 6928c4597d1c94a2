// What every scenario shares: run config, timeline and SLOs from -e, k6 options with derived thresholds, the device
// fleet, the chaos VU, a setup preflight, a teardown that undoes every fault, and handleSummary.
import http from 'k6/http';
import type { Options } from 'k6/options';
import {
  faultLabels,
  faultWindows,
  lastLinkDeath,
  loadTimeline,
  validateTimeline,
  type ChaosStep,
  type TimelineEntry,
} from '../../core/timelines.ts';
import { PHASES } from '../../core/phases.ts';
import { timerLagSubmetrics } from '../../core/timer-lag.ts';
import { plannedEvents, preflight, resetChaos, runChaos, type ChaosTargets } from './chaos.ts';
import type { WakeSchedule } from '../../core/device-env.ts';
import exec from 'k6/execution';
import { runEngineVu } from './engine-fleet.ts';
import { createK6Metrics, fleetScenario, loadUtterance, readRepoFile, runFleetVu } from './k6-fleet.ts';
import { VIOLATION_KINDS } from '../../core/device-link.ts';
import type { DeviceMetricName as MetricName, MetricSink } from '../../core/metric-names.ts';
import type { Profile } from '../../core/profiles.ts';
import {
  boundedInt,
  dialectOf,
  INSTANCE_BOUNDS,
  ownProfiles,
  parseWake,
  readRunConfig,
  type RunConfig,
} from '../../core/run-config.ts';
import { DEFAULT_SLOS, resolveSlos, sloThresholds, type Slo } from '../../core/slo.ts';
import { TREND_STATS, summaryOutputs } from '../../core/summary.ts';
import type { ResolvedRun, RunVars, SummaryData } from '../../core/run-contract.ts';
import { CLOSE_CODE_NAMES, CLOSE_CODE_RANGES, HTTP_REFUSALS } from '../../core/protocol.ts';
import { baseMetric, CAUSES, CHAOS_TAG, withTag } from '../../core/verdict.ts';

/** The outcome metrics a device tags with their phase, chaos:steady|during|recovery (each reported every way). */
const CHAOS_TAGGED = [
  'reconnect_time',
  'connect_success',
  'wake_success',
  'wake_ack_latency',
  'response_latency',
  'endpointing_latency',
  'session_drop_rate',
  'reply_stutter',
  'reply_truncated',
  'playback_stall_time',
];

export interface ScenarioSpec {
  name: string;
  devices: number;
  duration: string;
  /** A profile name, a mix ("web-heartbeat:50,my-badge:50"), or a .json path; names may be of `profiles`. */
  profile: string;
  /** The scenario's own profiles (validated like a JSON profile), usable by name in `profile`. */
  profiles?: Profile[];
  /** As the CLI takes it ("poisson:30s", "once:2s-10s", "fixed:1m", "off") or as a schedule object. */
  wake: WakeSchedule | string;
  /** A shipped timeline's name, a .json path, or the entries themselves. */
  timeline?: string | TimelineEntry[];
  ramp?: string;
  /** SLOs before -e SLO_… overrides; the defaults when absent. */
  slos?: Slo[];
  /** Extra thresholds (e.g. empty lists that make k6 report submetrics). */
  extraThresholds?: (cfg: RunConfig, steps: ChaosStep[]) => Record<string, unknown[]>;
  /** Wraps the device metric sink (e.g. to tag samples by time window). */
  wrapMetrics?: (sink: MetricSink, cfg: RunConfig, epochMs: number) => MetricSink;
  /** Scenario-specific lines for the stdout report. */
  report?: (data: SummaryData, cfg: RunConfig) => string[];
  /** Replaces the devices scenario (e.g. a ramping executor for capacity). */
  devicesScenario?: (cfg: RunConfig) => Record<string, unknown>;
  /** Connects spread over this fraction of DURATION instead of RAMP. */
  rampFraction?: number;
}

export interface SetupData {
  epoch: number;
  scenario: string;
  timeline: string;
  target: string;
}

/** The loopback HTTP origin of a ws:// target, to check it answers before any load. */
function httpOrigin(wsUrl: string): string {
  return wsUrl.replace(/^ws/, 'http');
}

export function makeScenario(spec: ScenarioSpec) {
  const env = __ENV as RunVars;
  const read = (p: string) => open(p);
  const OFF: WakeSchedule = { mode: 'off', interval_ms: 0, first_min_ms: 0, first_max_ms: 0 };
  const wake = typeof spec.wake === 'string' ? parseWake(spec.wake, OFF) : spec.wake;
  const cfg = readRunConfig(
    env,
    { devices: spec.devices, duration: spec.duration, profile: spec.profile, wake, ramp: spec.ramp },
    read,
    ownProfiles(spec.profiles),
    readRepoFile,
  );
  if (spec.rampFraction) cfg.rampMs = Math.round(cfg.durationMs * spec.rampFraction);
  const timeline =
    env.TIMELINE === undefined && Array.isArray(spec.timeline)
      ? {
          name: `${spec.name} timeline`,
          steps: validateTimeline(spec.timeline, `${spec.name} timeline`, cfg.durationMs),
        }
      : loadTimeline(env.TIMELINE ?? (spec.timeline as string | undefined), read, cfg.durationMs);
  const slos = resolveSlos(env, read, spec.slos ?? DEFAULT_SLOS);
  const targets: ChaosTargets = {
    toxiproxyUrls: cfg.toxiproxyUrls,
    controlUrl: (env.CONTROL_URL ?? '').replace(/\/+$/, ''),
  };
  const sink = createK6Metrics();
  const audio = loadUtterance();

  // Submetrics k6 reports only when a threshold names them (an empty list): what the verdict needs to name the culprit
  // of a breach. Per profile for every SLO, per close code and cause for failed connects and unplanned drops, per
  // reason for dropped sessions, and drops per close code for the metrics table.
  const submetrics: Record<string, unknown[]> = {};
  const codes = [...Object.keys(CLOSE_CODE_NAMES), ...Object.keys(CLOSE_CODE_RANGES), ...HTTP_REFUSALS];
  for (const s of slos) {
    for (const p of cfg.profiles) submetrics[withTag(s.metric, 'profile', p.profile.name)] = [];
    const base = baseMetric(s.metric);
    if (base === 'unplanned_drops' || base === 'connect_success') {
      for (const code of codes) submetrics[withTag(s.metric, 'code', code)] = [];
      for (const cause of Object.keys(CAUSES)) submetrics[withTag(s.metric, 'cause', cause)] = [];
    }
  }
  // The k6 device's socket cannot see why an upgrade was refused (k6/websockets says "bad handshake"), but k6 tags
  // its own ws_sessions sample with the HTTP status it got: the verdict names a refused upgrade's status from those.
  if (!cfg.engineUrl) for (const code of HTTP_REFUSALS) submetrics[`ws_sessions{status:${code.slice(5)}}`] = [];
  for (const reason of ['interrupted', 'timeout', 'error', 'lost'])
    submetrics[`sessions_dropped{reason:${reason}}`] = [];
  for (const kind of VIOLATION_KINDS) submetrics[`protocol_violations{kind:${kind}}`] = [];
  // The native engine's timer lag per firing, bucket by bucket (core/timer-lag.ts; the summary's quantiles).
  if (cfg.engineUrl) for (const name of timerLagSubmetrics()) submetrics[name] = [];
  for (const phase of PHASES) for (const m of CHAOS_TAGGED) submetrics[`${m}{${CHAOS_TAG}:${phase}}`] = [];
  // Recovery per fault and per profile: one row per fault in the report.
  for (const w of faultLabels(timeline.steps)) {
    submetrics[`recovery_time{fault:${w}}`] = [];
    for (const p of cfg.profiles) {
      submetrics[`recovery_time{fault:${w},profile:${p.profile.name}}`] = [];
      // The run's end cut this recovery: its time is a lower bound (the report marks it "≥").
      submetrics[`recoveries_cut{fault:${w},profile:${p.profile.name}}`] = [];
    }
    submetrics[`recoveries_cut{fault:${w}}`] = [];
  }
  for (const p of cfg.profiles) submetrics[`recovery_time{profile:${p.profile.name}}`] = [];
  // Reconnects that spanned a fault, per profile: the per-firmware comparison the verdict reports as findings. The
  // latencies of each profile in each phase: what the faults cost each firmware (report, tests).
  for (const phase of ['during', 'recovery'])
    for (const p of cfg.profiles) submetrics[`reconnect_time{chaos:${phase},profile:${p.profile.name}}`] = [];
  for (const m of ['wake_ack_latency', 'response_latency'])
    for (const phase of PHASES)
      for (const p of cfg.profiles) submetrics[`${m}{chaos:${phase},profile:${p.profile.name}}`] = [];
  for (const code of [1000, 1001, 1006, 1008, 1011, 1012, 1013, 4408, 4409])
    submetrics[`connection_drops{code:${code}}`] = [];
  const scenarios: Record<string, unknown> = {
    devices: spec.devicesScenario
      ? { exec: 'devices', ...spec.devicesScenario(cfg) }
      : fleetScenario(cfg, { exec: 'devices' }),
  };
  if (timeline.steps.length) {
    scenarios.chaos = {
      executor: 'per-vu-iterations',
      // One chaos VU, in one execution segment, drives every shard; CHAOS_VUS=N (k6-operator runners, each with its
      // own Toxiproxy) puts one in each of N segments, each driving its own runner's Toxiproxy.
      vus: env.CHAOS_VUS === undefined ? 1 : boundedInt(env.CHAOS_VUS, 'CHAOS_VUS', INSTANCE_BOUNDS),
      iterations: 1,
      exec: 'chaos',
      maxDuration: `${Math.ceil(cfg.durationMs / 1000) + 30}s`,
      gracefulStop: '5s',
    };
  }
  const options: Options = {
    scenarios: scenarios as Options['scenarios'],
    thresholds: sloThresholds(slos, {
      ...submetrics,
      ...(spec.extraThresholds?.(cfg, timeline.steps) ?? {}),
    }) as Options['thresholds'],
    summaryTrendStats: TREND_STATS,
    setupTimeout: '30s',
    teardownTimeout: '30s',
    // --insecure-tls: k6's own wss:// links and checks skip the certificate too (the engine's get it in its start).
    ...(cfg.tls.insecure ? { insecureSkipTLSVerify: true } : {}),
    // What the CLI reads with `k6 inspect` (its progress line shows the scenario's own duration); k6 ignores it.
    ext: {
      wakestorm: {
        duration_ms: cfg.durationMs,
        devices: cfg.devices,
        vus: cfg.vus,
        wake_mode: cfg.wake.mode,
        // The timeline's faults that act through Toxiproxy (a run --direct has none to act through).
        network_faults: [...new Set(timeline.steps.filter((s) => !s.needsControl).map((s) => s.fault))],
        lifecycles: [...new Set(Object.values(cfg.dialects).map((d) => d.lifecycle))],
        audio: [
          ...new Set(
            Object.values(cfg.dialects).flatMap((d) =>
              [d.audio.up, d.audio.down].map((a) => `${a.codec}/${a.framing}`),
            ),
          ),
        ],
      },
    },
  };

  function setup(): SetupData {
    // Nothing is sent before the target answers and Toxiproxy has what the timeline needs.
    for (const target of cfg.targetUrls) {
      const res = http.get(`${httpOrigin(target)}/health`, { timeout: '3s' });
      // Nothing listens: the tester was pointed at nothing, no run. A server that accepts and never answers is a server
      // that fails: the devices try, and connect_success judges it.
      // Through Toxiproxy a TLS server's certificate names the server, not the proxy's 127.0.0.1: a refused name here
      // means the server answered (the devices verify it by its own name, TLS_SERVER_NAME).
      if (res.status === 0 && cfg.tls.server_name && /x509|certificate|tls/i.test(res.error ?? '')) continue;
      if (res.status === 0 && /timeout/i.test(res.error ?? ''))
        console.warn(
          `wakestorm: TARGET_URL ${target} accepted the connection but did not answer /health in 3 s: the devices will try anyway`,
        );
      else if (res.status === 0)
        throw new Error(
          `cannot reach TARGET_URL ${target} (${res.error}): start the stack with 'wakestorm stack' or fix TARGET_URL`,
        );
    }
    preflight(targets, timeline.steps);
    return { epoch: Date.now() + 1000, scenario: spec.name, timeline: timeline.name, target: cfg.targetUrl };
  }

  function devices(data: SetupData): void {
    const metrics = spec.wrapMetrics ? spec.wrapMetrics(sink, cfg, data.epoch) : sink;
    const hooks = {
      linkDiedAt: timeline.steps.length ? () => lastLinkDeath(timeline.steps, data.epoch, Date.now()) : undefined,
      windows: faultWindows(timeline.steps, data.epoch),
    };
    if (cfg.engineUrl) runEngineVu(cfg, metrics, audio, hooks, exec.scenario.startTime);
    else runFleetVu(cfg, metrics, audio, hooks);
  }

  function chaos(data: SetupData): void {
    runChaos(timeline.steps, data.epoch, targets);
  }

  function teardown(): void {
    resetChaos(targets, timeline.steps);
  }

  function handleSummary(data: SummaryData) {
    const setup = data.setup_data as SetupData | undefined;
    const events = setup ? plannedEvents(timeline.steps, setup.epoch) : [];
    // What shaped the run, as k6 resolved it (defaults included): run.json and the report record it.
    const resolved: ResolvedRun = {
      devices: cfg.devices,
      devices_per_vu: cfg.devicesPerVu,
      vus: cfg.vus,
      duration_ms: cfg.durationMs,
      ramp_ms: cfg.rampMs,
      profile_mix: cfg.profiles.map((p) => ({ profile: p.profile.name, weight: p.weight })),
      profiles: cfg.profiles.map((p) => p.profile),
      dialects: Object.fromEntries(cfg.profiles.map((p) => [p.profile.name, dialectOf(p.profile, cfg.dialects).name])),
      timeline: {
        name: timeline.name,
        steps: timeline.steps.map((st) => ({
          at_ms: st.atMs,
          for_ms: st.forMs,
          fault: st.fault,
          streams: st.streams,
          params: st.params,
          toxicity: st.toxicity,
        })),
      },
      wake: cfg.wake,
      seed: cfg.seed,
      slos,
      ...(setup ? { epoch_ms: setup.epoch } : {}),
    };
    return summaryOutputs(data, env, spec.name, slos, events, spec.report?.(data, cfg) ?? [], resolved);
  }

  return { cfg, timeline, slos, options, setup, devices, chaos, teardown, handleSummary };
}

/**
 * Tags some device metrics with the time window of the run they fall in, and makes k6 report each window: one tag
 * name, given once. `windowAt` maps the fraction of the run elapsed (0-1) to a window name, or null for untagged.
 *   const w = timeWindows('window', ['wake_ack_latency'], ['first', 'last'], (f) => (f < 0.1 ? 'first' : f > 0.9 ? 'last' : null));
 *   makeScenario({ …, wrapMetrics: w.wrapMetrics, extraThresholds: w.extraThresholds });
 *   data.metrics[w.key('wake_ack_latency', 'first')]
 */
export function timeWindows(
  tag: string,
  metrics: MetricName[],
  windows: string[],
  windowAt: (fraction: number) => string | null,
) {
  const key = (metric: string, window: string) => `${metric}{${tag}:${window}}`;
  return {
    key,
    wrapMetrics: (sink: MetricSink, cfg: RunConfig, epochMs: number): MetricSink => ({
      add(name, value, tags) {
        const w = metrics.includes(name) ? windowAt((Date.now() - epochMs) / cfg.durationMs) : null;
        sink.add(name, value, w === null ? tags : { ...tags, [tag]: w });
      },
    }),
    extraThresholds: (): Record<string, unknown[]> =>
      Object.fromEntries(metrics.flatMap((m) => windows.map((w) => [key(m, w), []]))),
  };
}
