// The k6 side of the native device engine (engine/, docs/engine.md): a VU hands its share of the fleet to the engine
// over one control socket and records what the engine sends back as the same metrics, with the same names and tags,
// as the k6 device would (scenarios/lib/k6-fleet.ts). The start and the records' conversion are core/engine-contract.ts.
import { WebSocket } from 'k6/websockets';
import { clearTimeout, setTimeout } from 'k6/timers';
import type { MetricSink } from '../../core/metric-names.ts';
import { dialectOf, type RunConfig } from '../../core/run-config.ts';
import type { AudioFrames } from '../../core/device-env.ts';
import { engineStart, EngineRecords, type EngineRecord } from '../../core/engine-contract.ts';
import { owesReturn } from '../../core/device-rules.ts';
import { timerLagLabel, TIMER_LAG_BOUNDS_MS } from '../../core/timer-lag.ts';
import { phaseTracker, vuSlice, type FleetHooks } from './k6-fleet.ts';

/** The committed utterance on disk, PCM and Opus: the engine reads them itself (k6's open() gives bytes, not a path). */
const audioPath = (name: string) =>
  decodeURIComponent(import.meta.resolve(`../../audio/${name}`).replace(/^file:\/\//, ''));
const AUDIO_PATHS = { pcm: audioPath('utterance.pcm'), opus: audioPath('utterance.opus') };

interface EngineBatch {
  type: 'started' | 'batch' | 'stopped' | 'error';
  message?: string;
  records?: EngineRecord[];
  dropped?: number;
  connected?: Record<string, number>;
  lag_ms?: number;
  lag_counts?: number[];
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
  const records = new EngineRecords({ metrics, phase, linkDiedAt: hooks.linkDiedAt, warn: (l) => console.warn(l) });
  const builtAt = Date.now();
  const start = engineStart(cfg, audio, AUDIO_PATHS, first, last, startedAt, builtAt);
  // One sample per profile, not per device: thousands of samples at once grow k6's output buffer for the whole run
  // (it allocates a buffer of that size every 50 ms after: a fifth of k6's allocations at 10,000 devices).
  const started = new Array<number>(start.profiles.length).fill(0);
  for (const d of start.devices) started[d.profile]!++;
  started.forEach((n, p) => n && metrics.add('devices_started', n, { profile: start.profiles[p]!.name }));
  const owing = new Set(start.profiles.filter((p) => owesReturn(dialectOf(p, cfg.dialects))).map((p) => p.name));
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
    // Sent once: its device list (2,500 objects a VU) would otherwise stay alive in this closure, in k6's live heap.
    start.devices.length = 0;
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
    // An index loop: for…of allocates an iterator result per record in sobek (see EngineRecords.record).
    const recs = m.records ?? [];
    for (let i = 0; i < recs.length; i++) records.record(recs[i]!);
    if (m.dropped)
      console.warn(`wakestorm-engine: ${m.dropped} record(s) dropped in one batch (a flood past the batch bound)`);
    if (m.connected) {
      const t = Date.now();
      if (m.lag_ms !== undefined && m.type === 'batch') metrics.add('vu_loop_lag', m.lag_ms, {});
      const counts = m.lag_counts ?? [];
      for (let i = 0; i < counts.length && i <= TIMER_LAG_BOUNDS_MS.length; i++)
        if (counts[i]) metrics.add('timer_firings', counts[i]!, { lag_le: timerLagLabel(i) });
      // Per VU and profile, always tagged: the charts sum the tagged series (one rule for every fleet shape).
      for (const [profile, n] of Object.entries(m.connected))
        metrics.add('devices_connected', n, { vu: String(vu), profile });
      // Recovery counts the devices that owe a link back after a fault (core/device-rules.ts owesReturn).
      tracker?.observe(t, new Map(Object.entries(m.connected).filter(([p]) => owing.has(p))));
    }
    if (m.type === 'stopped') finish();
  };
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
