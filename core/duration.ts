// Durations as every part of wakestorm writes them ("90s", "2m", "1h30m", "500ms", or seconds): one grammar, one
// bound. No imports: k6 scripts of any weight (the benches' plain baselines too) can use it.
import { WakestormError } from './errors.ts';

class DurationError extends WakestormError {
  constructor(message: string) {
    super(message, 2);
  }

  override name = 'DurationError';
}

/**
 * The longest duration anything takes: 7 days. Every timer set from a parsed duration (the run, the watchdog, a
 * fault, a ramp) stays far inside a JS timer's 2^31-1 ms (24.8 days), past which it would fire at once.
 */
const MAX_DURATION_MS = 7 * 24 * 3_600_000;

/** "90s", "2m", "1h30m", "500ms" or a number of seconds → ms, at most MAX_DURATION_MS. */
export function parseDuration(v: string, name: string): number {
  const ms = parseAnyDuration(v, name);
  if (ms > MAX_DURATION_MS) throw new DurationError(`${name} must be at most 168h (7 days), got '${v}'`);
  return ms;
}

function parseAnyDuration(v: string, name: string): number {
  const s = v.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  let total = 0;
  let consumed = '';
  let m: RegExpExecArray | null;
  while ((m = re.exec(s))) {
    total += Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms' | 's' | 'm' | 'h'];
    consumed += m[0];
  }
  if (!consumed || consumed !== s)
    throw new DurationError(`${name} must be a duration like 30s, 2m or 1h30m, got '${v}'`);
  return Math.round(total);
}
