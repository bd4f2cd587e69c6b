/**
 * Seeded randomness so every result is reproducible for a given seed: mulberry32 (32-bit state,
 * good enough for sketching matrices) and Box–Muller normals.
 */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One standard normal sample (Box–Muller; the second value is discarded for simplicity). */
export function gaussian(random: () => number): number {
  const u = 1 - random(); // (0, 1]: log stays finite
  const v = random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

export function gaussianArray(length: number, random: () => number, out: Float32Array = new Float32Array(length)): Float32Array {
  for (let i = 0; i < length; i++) out[i] = gaussian(random);
  return out;
}
