// The three phases of a chaos run, as chaos engineering defines a gate (a steady-state hypothesis, tolerances during a
// fault, recovery after it): `during` a fault window, `recovery` from its end until the devices are back at their
// steady level, `steady` everything else. A tracker per fleet slice (a k6 VU) watches its own devices once a second,
// decides when its slice recovered, and says which phase any outcome fell in; the recovery it sees is a metric.

/** The `chaos` tag of an outcome: which phase of the run it fell in. With no timeline, everything is steady. */
export type Phase = 'steady' | 'during' | 'recovery';
export const PHASES: readonly Phase[] = ['steady', 'during', 'recovery'];

/** A recovery not seen within this long after a fault's end is over anyway: what follows is steady again. */
const RECOVERY_MAX_MS = 60_000;
/** At the run's end, a fault that ended less than this long ago is not judged for recovery (no time to come back). */
const FINISH_CENSOR_MS = 10_000;
/** A profile is back when this share of its devices connected before the fault are connected again. */
const RECOVERED_SHARE = 0.99;

/** One fault of the timeline as absolute times, with the label its recovery is reported under. */
export interface FaultWindow {
  /** e.g. "2:cut" (the timeline's second entry, a cut): bounded by the timeline's length. */
  label: string;
  start: number;
  end: number;
}

/**
 * Called once per fault and profile: how long after the fault's end the profile's devices were back (or the bound).
 * `cut`: not back when the run ended, so `ms` is the wait until then (a lower bound), not the recovery bound.
 */
export type RecoveryReport = (w: FaultWindow, profile: string, ms: number, recovered: boolean, cut?: boolean) => void;

export class PhaseTracker {
  /** Per window: connected devices per profile at the last look before it began. */
  private readonly before: (Map<string, number> | null)[];
  /** Per window: the profiles already back (or given up on). */
  private readonly done: Set<string>[];
  /** Per window: when every profile was back; null while recovering. */
  private readonly recoveredAt: (number | null)[];

  constructor(
    readonly windows: FaultWindow[],
    private readonly report: RecoveryReport,
    private readonly maxMs = RECOVERY_MAX_MS,
  ) {
    this.before = windows.map(() => null);
    this.done = windows.map(() => new Set());
    this.recoveredAt = windows.map(() => null);
  }

  /** A look at the slice: connected devices per profile (persistent links only; a per-wake channel owes no return). */
  observe(now: number, connected: Map<string, number>): void {
    for (let i = 0; i < this.windows.length; i++) {
      const w = this.windows[i]!;
      if (now < w.start) {
        this.before[i] = new Map(connected);
        continue;
      }
      if (now < w.end || this.recoveredAt[i] !== null) continue;
      const level = this.before[i] ?? new Map<string, number>();
      let all = true;
      for (const [profile, had] of level) {
        if (this.done[i]!.has(profile)) continue;
        const back = (connected.get(profile) ?? 0) >= Math.ceil(had * RECOVERED_SHARE);
        const late = now - w.end >= this.maxMs;
        if (back || late) {
          this.done[i]!.add(profile);
          this.report(w, profile, back ? now - w.end : this.maxMs, back);
        } else all = false;
      }
      // Past the bound the run is steady again, whatever is still missing (and it is judged there).
      if (all) this.recoveredAt[i] = Math.min(now, w.end + this.maxMs);
    }
  }

  /**
   * The run ends: a profile still not back after a fault that ended at least `censorMs` ago reports its wait so far
   * (a lower bound, not recovered); one that ended more recently had no time to come back and is not judged.
   */
  finish(now: number, censorMs = FINISH_CENSOR_MS): void {
    for (let i = 0; i < this.windows.length; i++) {
      const w = this.windows[i]!;
      if (this.recoveredAt[i] !== null || now - w.end < censorMs) continue;
      for (const profile of (this.before[i] ?? new Map<string, number>()).keys()) {
        if (this.done[i]!.has(profile)) continue;
        this.done[i]!.add(profile);
        this.report(w, profile, now - w.end, false, true);
      }
      this.recoveredAt[i] = now;
    }
  }

  /** The phase of an outcome that spanned [from, to]: during a window, recovering after one, or steady. */
  phase(from: number, to: number): Phase {
    const ws = this.windows;
    for (let i = 0; i < ws.length; i++) if (from <= ws[i]!.end && to >= ws[i]!.start) return 'during';
    for (let i = 0; i < ws.length; i++) {
      const w = ws[i]!;
      const until = this.recoveredAt[i] ?? w.end + this.maxMs;
      if (to >= w.end && from < until) return 'recovery';
    }
    return 'steady';
  }
}
