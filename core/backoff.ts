// Reconnect backoff policies: given the attempt number and a random source, how long to wait before the next try.
// Names follow the AWS Architecture Blog "Exponential Backoff And Jitter" (full, equal, decorrelated).

export type BackoffPolicyName = 'fixed' | 'exponential' | 'full-jitter' | 'equal-jitter' | 'decorrelated-jitter';
export const BACKOFF_POLICIES: readonly BackoffPolicyName[] = [
  'fixed',
  'exponential',
  'full-jitter',
  'equal-jitter',
  'decorrelated-jitter',
];

export interface BackoffSpec {
  policy: BackoffPolicyName;
  /** Base delay: the fixed delay, or the first exponential step. */
  base_ms: number;
  /** No delay exceeds this. */
  cap_ms: number;
  /** Tries after a loss before the device gives up; 0 means forever. */
  max_attempts: number;
  /** Delay before the first try after a loss, when it differs from the policy (ESP32 badge: 3 s, then 5 s). */
  first_ms?: number;
  /** Extra uniform jitter U(0, jitter_ms) added to every delay (Pi assistant: + U(0, 1) s). */
  jitter_ms?: number;
}

/** Stateful because decorrelated jitter depends on the previous delay; reset() after a successful connect. */
export class Backoff {
  private prev: number;
  constructor(
    private readonly spec: BackoffSpec,
    private readonly random: () => number,
  ) {
    this.prev = spec.base_ms;
  }

  reset(): void {
    this.prev = this.spec.base_ms;
  }

  /** Delay before try number `attempt` (1-based) after a loss. */
  next(attempt: number): number {
    const s = this.spec;
    if (attempt === 1 && s.first_ms !== undefined) return this.withJitter(Math.min(s.cap_ms, s.first_ms));
    const exp = Math.min(s.cap_ms, s.base_ms * 2 ** Math.min(attempt - 1, 30));
    let d: number;
    switch (s.policy) {
      case 'fixed':
        d = Math.min(s.cap_ms, s.base_ms);
        break;
      case 'exponential':
        d = exp;
        break;
      case 'full-jitter':
        d = this.random() * exp;
        break;
      case 'equal-jitter':
        d = exp / 2 + this.random() * (exp / 2);
        break;
      case 'decorrelated-jitter':
        d = Math.min(s.cap_ms, s.base_ms + this.random() * (this.prev * 3 - s.base_ms));
        this.prev = d;
        break;
    }
    return this.withJitter(d);
  }

  private withJitter(d: number): number {
    const j = this.spec.jitter_ms ? this.random() * this.spec.jitter_ms : 0;
    return Math.round(d + j);
  }
}
