/**
 * Seeded randomness so every result is reproducible for a given seed: mulberry32 (32-bit state,
 * good enough for sketching matrices) and Box–Muller normals.
 */
import { InvalidArgumentError } from "../errors.js";

/** Seeds are 32-bit (mulberry32's state). */
export const MAX_SEED = 0xffffffff;

/** The generator takes a 32-bit state: any other seed would be truncated into another one silently. */
export function checkSeed(seed: unknown, name = "seed"): asserts seed is number {
  if (!Number.isInteger(seed) || (seed as number) < 0 || (seed as number) > MAX_SEED) {
    throw new InvalidArgumentError(`${name} must be an integer in 0..${MAX_SEED}, got ${String(seed)}`);
  }
}

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
