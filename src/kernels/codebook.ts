/**
 * Block-wise codebook quantization: the kernel under every NF / FP4 / uniform quantizer.
 * Each run of `blockSize` consecutive values (row-major, the last block may be short) is scaled by
 * its absmax and mapped to a code of an ascending `table`. Two upstream-exact flavours:
 * - "peft": s = x / absmax (true float32 division), code = argmin_k |s − t_k| in float32 with ties to
 *   the lower code; 0/0 = NaN maps to code 0.
 * - "bnb": s = x · fl32(1/absmax), code = #{thresholds < s} (strict >, ties to the lower code), NaN → 0.
 * This file is the plain-TS reference; the fused `fakeQuantize` is the hot path LoftQ uses.
 */
export type CodeSelection = "peft" | "bnb";

export interface CodebookSpec {
  /** Ascending code values; the code of a value is its index in this table (see `codeOf`). */
  readonly table: Float32Array;
  readonly selection: CodeSelection;
  readonly blockSize: number;
  /**
   * Code for every element of an all-zero block. Upstream divides by zero there: PEFT (0/0) and bnb
   * CUDA (0·∞) get NaN and fall to code 0, which dequantizes to −0; bnb's CPU path clamps the
   * absmax and gets the code of 0.0.
   */
  readonly zeroBlockCode: number;
  /** Bucket lookup for #{thresholds < s}; see `buildThresholdLookup`. */
  readonly lookup: ThresholdLookup;
}

/**
 * #{thresholds < s} in O(1) without data-dependent branches: [-1, 1] is cut into LOOKUP_BUCKETS
 * equal buckets, each holding at most one threshold; a bucket stores the count of thresholds below
 * it and the one inside it. Bucket edges are exact in float64, so the answer equals the binary
 * search exactly (3× faster on Gaussian data, where the search's branches are unpredictable).
 */
export const LOOKUP_BUCKETS = 4096;

/**
 * PEFT's argmin rule and the midpoint rule agree except within rounding distance of a midpoint, so
 * only values that close to a threshold pay for the exact float32 comparison.
 */
export const MIDPOINT_BAND = 1e-6;

export interface ThresholdLookup {
  /** The ascending decision thresholds the lookup was built from: code = #{thresholds < s}. */
  readonly thresholds: Float32Array;
  readonly below: Uint8Array;
  readonly inside: Float32Array;
  /** 1 for buckets within MIDPOINT_BAND of a threshold: only their values need PEFT's exact check. */
  readonly nearThreshold: Uint8Array;
}

export function buildThresholdLookup(thresholds: Float32Array): ThresholdLookup | undefined {
  const below = new Uint8Array(LOOKUP_BUCKETS + 1);
  const inside = new Float32Array(LOOKUP_BUCKETS + 1);
  const nearThreshold = new Uint8Array(LOOKUP_BUCKETS + 1);
  let count = 0;
  for (let bucket = 0; bucket <= LOOKUP_BUCKETS; bucket++) {
    const lower = -1 + (bucket * 2) / LOOKUP_BUCKETS;
    const upper = -1 + ((bucket + 1) * 2) / LOOKUP_BUCKETS;
    while (count < thresholds.length && thresholds[count]! < lower) count++;
    below[bucket] = count;
    inside[bucket] = count < thresholds.length ? thresholds[count]! : Infinity;
    // A second threshold inside the same bucket would need a search: no lookup for such tables.
    if (bucket < LOOKUP_BUCKETS && count + 1 < thresholds.length && thresholds[count + 1]! < upper) return undefined;
    nearThreshold[bucket] = thresholds.some((t) => t > lower - MIDPOINT_BAND && t < upper + MIDPOINT_BAND) ? 1 : 0;
  }
  return { thresholds: Float32Array.from(thresholds), below, inside, nearThreshold };
}

/** Quantizes `values` into table indices (one byte each) and per-block absmax. */
export function quantizeBlocks(values: Float32Array, spec: CodebookSpec, codes: Uint8Array, absmax: Float32Array, dequantized?: Float32Array): void {
  const { table, blockSize } = spec;
  const n = values.length;
  for (let block = 0, start = 0; start < n; block++, start += blockSize) {
    const end = Math.min(start + blockSize, n);
    let max = 0;
    for (let i = start; i < end; i++) {
      const a = Math.abs(values[i]!);
      if (a > max) max = a;
    }
    absmax[block] = max;
    if (max === 0) {
      const code = spec.zeroBlockCode;
      codes.fill(code, start, end);
      if (dequantized) dequantized.fill(Math.fround(table[code]! * 0), start, end);
      continue;
    }
    const scale = Math.fround(max);
    if (spec.selection === "bnb") encodeBnb(values, start, end, scale, spec, codes, dequantized);
    else encodePeft(values, start, end, scale, spec, codes, dequantized);
  }
}

function encodeBnb(values: Float32Array, start: number, end: number, scale: number, spec: CodebookSpec, codes: Uint8Array, dequantized?: Float32Array): void {
  const { table, lookup } = spec;
  const { below, inside } = lookup;
  const half = LOOKUP_BUCKETS / 2;
  const reciprocal = Math.fround(1 / scale);
  for (let i = start; i < end; i++) {
    const s = Math.fround(values[i]! * reciprocal);
    const bucket = ((s + 1) * half) | 0;
    const code = below[bucket]! + (s > inside[bucket]! ? 1 : 0);
    codes[i] = code;
    if (dequantized) dequantized[i] = Math.fround(table[code]! * scale);
  }
}


function encodePeft(values: Float32Array, start: number, end: number, scale: number, spec: CodebookSpec, codes: Uint8Array, dequantized?: Float32Array): void {
  const { table, lookup } = spec;
  const { below, inside, nearThreshold } = lookup;
  const half = LOOKUP_BUCKETS / 2;
  const last = table.length - 1;
  for (let i = start; i < end; i++) {
    const s = Math.fround(values[i]! / scale);
    const bucket = ((s + 1) * half) | 0;
    let code = below[bucket]! + (s > inside[bucket]! ? 1 : 0);
    if (nearThreshold[bucket]) code = nearestInFloat32(s, table, code, last);
    codes[i] = code;
    if (dequantized) dequantized[i] = Math.fround(table[code]! * scale);
  }
}

/**
 * torch.argmin(|s − t|) in float32 around a threshold-based guess: the float32 midpoints and the
 * float32 distances can disagree by an ulp, so compare the neighbours exactly as upstream does.
 */
function nearestInFloat32(s: number, table: Float32Array, guess: number, last: number): number {
  let best = guess;
  let bestDistance = Math.abs(Math.fround(s - table[guess]!));
  const from = guess > 0 ? guess - 1 : 0;
  const to = guess < last ? guess + 1 : last;
  for (let k = from; k <= to; k++) {
    const d = Math.abs(Math.fround(s - table[k]!));
    if (d < bestDistance || (d === bestDistance && k < best)) {
      best = k;
      bestDistance = d;
    }
  }
  return best;
}

/** Inverse of quantizeBlocks: table[code] · absmax in float32. */
export function dequantizeBlocks(codes: Uint8Array, absmax: Float32Array, table: Float32Array, blockSize: number, out: Float32Array): Float32Array {
  for (let i = 0; i < codes.length; i++) out[i] = Math.fround(table[codes[i]!]! * absmax[(i / blockSize) | 0]!);
  return out;
}
