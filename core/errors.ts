// One base for every error a user can cause: its message is the one line the CLI prints, its exit code what it exits
// with (2: bad input, nothing started; 1: could not start or run). Runtime-free: k6 and Node throw the same classes.
export class WakestormError extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2 = 1,
  ) {
    super(message);
  }
}

/** The candidate closest to a mistyped word (at most two edits away, "reconect" → "reconnect"), or null. */
function closest(word: string, candidates: readonly string[]): string | null {
  let best: string | null = null;
  let bestD = 3;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase(), bestD);
    if (d < bestD) [best, bestD] = [c, d];
  }
  return best;
}

/** A field that is not one: its name, and the one it was likely meant to be. */
export function unknownField(key: string, known: readonly string[]): string {
  const near = closest(key, known);
  return `is not a field${near ? ` (did you mean "${near}"?)` : ` (fields: ${known.join(', ')})`}`;
}

function editDistance(a: string, b: string, bound: number): number {
  if (Math.abs(a.length - b.length) >= bound) return bound;
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++)
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}
