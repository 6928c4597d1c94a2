// Fidelity calibration: known truths (server delays, a latency toxic both ways, a cut with a fixed backoff), and
// latency samples tagged ramp, steady (after the ramp, before the cut) or disturbed, so the bench compares like with like.
//   run by bench/fidelity.ts; TIMELINE and CUT_AT_MS come from it.
import { timerLagSubmetrics } from '../../core/timer-lag.ts';
import { makeScenario } from '../../scenarios/lib/kit.ts';

const CUT_AT_MS = Number(__ENV.CUT_AT_MS ?? 50_000);

const s = makeScenario({
  name: 'calibration',
  devices: 100,
  duration: '75s',
  profile: 'recommended',
  wake: { mode: 'poisson', interval_ms: 10_000, first_min_ms: 0, first_max_ms: 10_000 },
  // 'steady' is after the ramp (plus 3 s to settle) and before the cut: connect storms and the cut are not what the
  // latency truths describe.
  wrapMetrics: (sink, cfg, epoch) => ({
    add(name, value, tags) {
      if (
        name !== 'wake_ack_latency' &&
        name !== 'response_latency' &&
        name !== 'vu_loop_lag' &&
        name !== 'timer_firings'
      )
        return sink.add(name, value, tags);
      const t = Date.now();
      sink.add(name, value, {
        ...tags,
        phase: t < epoch + cfg.rampMs + 3000 ? 'ramp' : t < epoch + CUT_AT_MS - 1000 ? 'steady' : 'disturbed',
      });
    },
  }),
  extraThresholds: () => ({
    'wake_ack_latency{phase:steady}': [],
    'response_latency{phase:steady}': [],
    'vu_loop_lag{phase:steady}': [],
    ...Object.fromEntries(timerLagSubmetrics('phase:steady').map((m) => [m, []])),
  }),
});

// k6 reads these from the entry script: options, the lifecycle hooks, and the two scenarios' exec functions.
export const { options, setup, devices, chaos, teardown, handleSummary } = s;
