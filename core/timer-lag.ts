// The native engine's timer lag per firing, as counts in fixed buckets: every device timer the engine fires (audio
// frames, playback, keepalives, backoffs) lands in the bucket of how late it fired. `vu_loop_lag` keeps the latest
// timer of each VU-second, which a single stall of the whole engine sets for every VU at once; these counts give the
// distribution over firings, the way a scheduler's latency is reported, exactly mergeable across instances.

/** Upper bounds of the buckets, ms (a last bucket holds the rest). The engine takes them from the start message. */
export const TIMER_LAG_BOUNDS_MS = [0.5, 1, 2, 3, 5, 10, 20, 50, 100, 250, 1000] as const;

/** The `lag_le` label of bucket i (its upper bound, or `inf`). */
export function timerLagLabel(i: number): string {
  return i < TIMER_LAG_BOUNDS_MS.length ? String(TIMER_LAG_BOUNDS_MS[i]) : 'inf';
}

/** The submetrics that make k6 report every bucket's count (each optionally within another tag, e.g. a phase). */
export function timerLagSubmetrics(within = ''): string[] {
  const out: string[] = [];
  for (let i = 0; i <= TIMER_LAG_BOUNDS_MS.length; i++)
    out.push(`timer_firings{${within ? `${within},` : ''}lag_le:${timerLagLabel(i)}}`);
  return out;
}

/**
 * The q-quantile of the lag, ms, from the buckets' counts (linear within a bucket; the last bound when it falls past
 * it); null when nothing fired.
 */
export function timerLagQuantile(counts: readonly number[], q: number): number | null {
  const total = counts.reduce((a, b) => a + b, 0);
  if (!total) return null;
  const rank = q * total;
  let cum = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i] ?? 0;
    if (c > 0 && cum + c >= rank) {
      if (i >= TIMER_LAG_BOUNDS_MS.length) return TIMER_LAG_BOUNDS_MS[TIMER_LAG_BOUNDS_MS.length - 1]!;
      const lo = i === 0 ? 0 : TIMER_LAG_BOUNDS_MS[i - 1]!;
      return lo + ((TIMER_LAG_BOUNDS_MS[i]! - lo) * (rank - cum)) / c;
    }
    cum += c;
  }
  return TIMER_LAG_BOUNDS_MS[TIMER_LAG_BOUNDS_MS.length - 1]!;
}

/** The buckets' counts from a k6 summary's submetrics (timerLagSubmetrics, same `within`). */
export function timerLagCounts(
  metrics: Record<string, { values: Record<string, number | undefined> } | undefined>,
  within = '',
): number[] {
  return timerLagSubmetrics(within).map((name) => metrics[name]?.values.count ?? 0);
}
