// Seeded random numbers: one reproducible stream per device from SEED and the device id.

/** FNV-1a 32-bit hash of a string. */
function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** mulberry32: small, fast, good enough for schedules and jitter (not for secrets). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function deviceRandom(seed: string | number, deviceId: string): () => number {
  return mulberry32(hash32(`${seed}:${deviceId}`));
}

/** Exponentially distributed interval with the given mean (a Poisson process's gaps). */
export function expInterval(mean: number, random: () => number): number {
  return -Math.log(1 - random()) * mean;
}
