// What every scenario shares: run config, timeline and SLOs from -e, k6 options with derived thresholds, the device
// fleet, the chaos VU, a setup preflight, a teardown that undoes every fault, and handleSummary.
import http from 'k6/http';
import { lastLinkDeath, loadTimeline, type ChaosStep } from '../../toxics/timelines.ts';
import { plannedEvents, preflight, resetChaos, runChaos, type ChaosTargets } from '../../toxics/chaos.ts';
import type { WakeSchedule } from './device.ts';
import { createK6Metrics, fleetScenario, loadUtterance, runFleetVu } from './k6-fleet.ts';
import type { MetricSink } from './metric-names.ts';
import { readRunConfig, type RunConfig } from './run-config.ts';
import { DEFAULT_SLOS, resolveSlos, sloThresholds, type Slo } from './slo.ts';
import { TREND_STATS, summaryOutputs, type SummaryData } from './summary.ts';

export interface ScenarioSpec {
  name: string;
  devices: number;
  duration: string;
  profile: string;
  wake: WakeSchedule;
  timeline?: string;
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
  const env = __ENV as Record<string, string | undefined>;
  const read = (p: string) => open(p);
  const cfg = readRunConfig(env, { devices: spec.devices, duration: spec.duration, profile: spec.profile, wake: spec.wake, ramp: spec.ramp }, read);
  if (spec.rampFraction) cfg.rampMs = Math.round(cfg.durationMs * spec.rampFraction);
  const timeline = loadTimeline(env.TIMELINE ?? spec.timeline, read, cfg.durationMs);
  const slos = resolveSlos(env, read, spec.slos ?? DEFAULT_SLOS);
  const targets: ChaosTargets = { toxiproxyUrls: cfg.toxiproxyUrls, controlUrl: (env.CONTROL_URL ?? '').replace(/\/+$/, '') };
  const sink = createK6Metrics();
  const audio = loadUtterance();

  // Submetrics k6 reports only when a threshold names them: per profile when profiles are mixed, so a run
  // compares them side by side, and drops per close code.
  const submetrics: Record<string, unknown[]> = {};
  if (cfg.profiles.length > 1) {
    for (const p of cfg.profiles) {
      for (const m of ['wake_ack_latency', 'response_latency', 'reconnect_time', 'session_drop_rate', 'connection_drops']) submetrics[`${m}{profile:${p.profile.name}}`] = [];
    }
  }
  // Drops split by close code (a cut is 1006, a drain 1012, a full server 1013, a ghost replaced 4409).
  for (const code of [1000, 1001, 1006, 1008, 1011, 1012, 1013, 4408, 4409]) submetrics[`connection_drops{code:${code}}`] = [];
  const scenarios: Record<string, unknown> = { devices: spec.devicesScenario ? { exec: 'devices', ...spec.devicesScenario(cfg) } : fleetScenario(cfg, { exec: 'devices' }) };
  if (timeline.steps.length) {
    scenarios.chaos = { executor: 'per-vu-iterations', vus: 1, iterations: 1, exec: 'chaos', maxDuration: `${Math.ceil(cfg.durationMs / 1000) + 30}s`, gracefulStop: '5s' };
  }
  const options = {
    scenarios,
    thresholds: sloThresholds(slos, { ...submetrics, ...(spec.extraThresholds?.(cfg, timeline.steps) ?? {}) }),
    summaryTrendStats: TREND_STATS,
    setupTimeout: '30s',
    teardownTimeout: '30s',
  };

  function setup(): SetupData {
    // Nothing is sent before the target answers and Toxiproxy has what the timeline needs.
    for (const target of cfg.targetUrls) {
      const res = http.get(`${httpOrigin(target)}/health`, { timeout: '3s' });
      if (res.status === 0) throw new Error(`cannot reach TARGET_URL ${target} (${res.error}): start the stack with 'wakestorm stack' or fix TARGET_URL`);
    }
    preflight(targets, timeline.steps);
    return { epoch: Date.now() + 1000, scenario: spec.name, timeline: timeline.name, target: cfg.targetUrl };
  }

  function devices(data: SetupData): void {
    const metrics = spec.wrapMetrics ? spec.wrapMetrics(sink, cfg, data.epoch) : sink;
    runFleetVu(cfg, metrics, audio, { linkDiedAt: timeline.steps.length ? () => lastLinkDeath(timeline.steps, data.epoch, Date.now()) : undefined });
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
    return summaryOutputs(data, env, spec.name, slos, events, spec.report?.(data, cfg) ?? []);
  }

  return { cfg, timeline, slos, options, setup, devices, chaos, teardown, handleSummary };
}
