// Runs bench/frame-cost.ts and turns its windows into CPU per unit: k6's utime+stime from /proc, sampled every 50 ms,
// over each window the script reports. Both windows run in one k6 process, so the ratio compares like with like.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { spawnK6 } from '../scripts/k6.ts';
import { cpuSeconds } from '../scripts/proc-stats.ts';

export interface FrameCost {
  streams: number;
  timers_per_s: number;
  frames_per_s: number;
  /** CPU per bare k6 timer callback (20 ms chains): the least any paced frame costs. */
  us_per_timer: number;
  /** CPU per uplink frame of the real device model (its step, the timer, the frame handed to a socket). */
  us_per_frame: number;
  /** CPU one core spends on 11,500 frames/s, the uplink of 10,000 devices waking once per 5 minutes. */
  pct_core_at_10k: number;
  slips: number;
  /** The same measure in the native engine (engine/framecost_test.go): Go timers, the engine's device model. */
  engine?: { streams: number; us_per_timer: number; us_per_frame: number; frames_per_s: number };
}

/**
 * The engine's CPU per uplink frame: its Go test (skipped in `npm test`) paces `streams` talking devices with sockets in
 * memory and reports CPU per frame against bare Go timers at the same pace, from getrusage over each window.
 */
export function engineFrameCost(streams: number, log: (l: string) => void): NonNullable<FrameCost['engine']> {
  const r = spawnSync('go', ['test', '-v', '-run', '^TestFrameCost$', '-count=1', '.'], {
    cwd: join(import.meta.dirname, '..', 'engine'),
    env: { ...process.env, WAKESTORM_FRAME_COST: String(streams), CGO_ENABLED: '0', GOTOOLCHAIN: 'local' },
    encoding: 'utf8',
    timeout: 300_000,
  });
  const m = /ENGINE_FRAME_COST (\{.*\})/.exec(r.stdout ?? '');
  if (r.status !== 0 || !m)
    throw new Error(`engine frame cost: go test exit ${r.status}: ${(r.stdout ?? '').slice(-300)}`);
  const j = JSON.parse(m[1]!) as { us_per_timer: number; us_per_frame: number; frames_per_s: number };
  const out = {
    streams,
    us_per_timer: +j.us_per_timer.toFixed(2),
    us_per_frame: +j.us_per_frame.toFixed(2),
    frames_per_s: Math.round(j.frames_per_s),
  };
  log(
    `  engine, ${streams} streams: ${out.us_per_timer} µs CPU per bare Go timer, ${out.us_per_frame} µs per device-model frame (${out.frames_per_s} frames/s)`,
  );
  return out;
}

export async function frameCost(streams: number, log: (l: string) => void): Promise<FrameCost> {
  let out = '';
  const k6 = spawnK6({
    script: join(import.meta.dirname, 'k6', 'frame-cost.ts'),
    vars: { STREAMS: String(streams) },
    args: ['-q'],
    onLine: (l) => (out += `${l}\n`),
  });
  const samples: { t: number; cpu: number }[] = [];
  const poll = setInterval(() => {
    try {
      samples.push({ t: Date.now(), cpu: cpuSeconds(k6.child.pid!) });
    } catch {
      /* exited */
    }
  }, 50);
  const { code } = await k6.closed;
  clearInterval(poll);
  const windows = [...out.matchAll(/FRAME_WINDOW (\{.*?\})"? source/g)].map(
    (m) =>
      JSON.parse(m[1]!.replace(/\\"/g, '"')) as {
        phase: string;
        from: number;
        to: number;
        count: number;
        slips?: number;
      },
  );
  const w = (phase: string) => windows.find((x) => x.phase === phase);
  const timers = w('timers');
  const frames = w('frames');
  if (code !== 0 || !timers || !frames)
    throw new Error(`frame-cost: k6 exit ${code}, windows ${JSON.stringify(windows)}: ${out.slice(-300)}`);
  const cpuAt = (t: number) => {
    const s = samples.reduce((best, x) => (Math.abs(x.t - t) < Math.abs(best.t - t) ? x : best), samples[0]!);
    return s.cpu;
  };
  const quiet = w('idle');
  const idleRate = quiet ? (cpuAt(quiet.to) - cpuAt(quiet.from)) / ((quiet.to - quiet.from) / 1000) : 0;
  // CPU in the window, less k6's background rate measured in the idle window, per unit done.
  const per = (x: { from: number; to: number; count: number }) =>
    ((cpuAt(x.to) - cpuAt(x.from) - idleRate * ((x.to - x.from) / 1000)) * 1e6) / x.count;
  const usTimer = per(timers);
  const usFrame = per(frames);
  const r: FrameCost = {
    streams,
    timers_per_s: Math.round((timers.count * 1000) / (timers.to - timers.from)),
    frames_per_s: Math.round((frames.count * 1000) / (frames.to - frames.from)),
    us_per_timer: +usTimer.toFixed(2),
    us_per_frame: +usFrame.toFixed(2),
    pct_core_at_10k: +((11_500 * usFrame) / 1e4).toFixed(1),
    slips: frames.slips ?? 0,
  };
  log(
    `  ${streams} streams: ${r.us_per_timer} µs CPU per bare timer, ${r.us_per_frame} µs per device-model frame (${r.frames_per_s} frames/s, ${r.slips} slips); 11,500 frames/s would take ${r.pct_core_at_10k}% of a core`,
  );
  return r;
}
