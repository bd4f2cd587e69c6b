/**
 * Block-wise codebook quantization: the kernel under every NF / FP4 / uniform quantizer.
 * Each run of `blockSize` consecutive values (row-major, the last block may be short) is scaled by
 * its absmax and mapped to a code of an ascending `table`. Two upstream-exact flavours:
 * - "peft": s = x / absmax (true float32 division), code = argmin_k |s − t_k| in float32 with ties to
 *   the lower code; 0/0 = NaN maps to code 0.
 * - "bnb": s = x · fl32(1/absmax), code = #{thresholds < s} (strict >, ties to the lower code), NaN → 0.
 * This file is the plain-TS reference; the backends' `encodeCodebook` kernels are the hot path.
 */
import { ShapeError } from "../errors.js";
import type { DecodeCall } from "./backend.js";

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

export interface ThresholdLookup {
  /** The ascending decision thresholds the lookup was built from: code = #{thresholds < s}. */
  readonly thresholds: Float32Array;
  readonly below: Uint8Array;
  readonly inside: Float32Array;
}

export function buildThresholdLookup(thresholds: Float32Array): ThresholdLookup | undefined {
  const below = new Uint8Array(LOOKUP_BUCKETS + 1);
  const inside = new Float32Array(LOOKUP_BUCKETS + 1);
  let count = 0;
  for (let bucket = 0; bucket <= LOOKUP_BUCKETS; bucket++) {
    const lower = -1 + (bucket * 2) / LOOKUP_BUCKETS;
    const upper = -1 + ((bucket + 1) * 2) / LOOKUP_BUCKETS;
    while (count < thresholds.length && thresholds[count]! < lower) count++;
    below[bucket] = count;
    inside[bucket] = count < thresholds.length ? thresholds[count]! : Infinity;
    // A second threshold inside the same bucket would need a search: no lookup for such tables.
    if (bucket < LOOKUP_BUCKETS && count + 1 < thresholds.length && thresholds[count + 1]! < upper) return undefined;
  }
  return { thresholds: Float32Array.from(thresholds), below, inside };
}

/**
 * The thresholds that make #{thresholds < s} equal PEFT's rule, argmin_k |s − t_k| computed in
 * float32 with ties to the lower code, for every float32 s. Between adjacent codes a < b the
 * rounded distances fl(s − a) and fl(b − s) are monotone in s, so "b is strictly closer" switches
 * from false to true exactly once; the threshold is the last float32 where it is still false
 * (found by bisection over the float32 values of [a, b]). It lies within a few ulps of the float32
 * midpoint, where the rounding of the distances decides, so no value needs a second look.
 */
export function argminThresholds(table: Float32Array): Float32Array {
  const thresholds = new Float32Array(table.length - 1);
  for (let c = 0; c + 1 < table.length; c++) {
    const a = table[c]!;
    const b = table[c + 1]!;
    const upperCloser = (s: number) => Math.abs(Math.fround(s - b)) < Math.abs(Math.fround(s - a));
    // Invariant: upperCloser(value(low)) is false, upperCloser(value(high)) is true.
    let low = orderedKey(a);
    let high = orderedKey(b);
    while (high - low > 1) {
      const middle = Math.floor((low + high) / 2);
      if (upperCloser(fromOrderedKey(middle))) high = middle;
      else low = middle;
    }
    thresholds[c] = fromOrderedKey(low);
  }
  return thresholds;
}

const keyView = new DataView(new ArrayBuffer(4));

/** float32 → integer with the same order (−0 and +0 adjacent), so bisection can walk float32 values. */
function orderedKey(value: number): number {
  keyView.setFloat32(0, value);
  const bits = keyView.getInt32(0);
  return bits >= 0 ? bits : -(bits & 0x7fffffff) - 1;
}

function fromOrderedKey(key: number): number {
  keyView.setInt32(0, key >= 0 ? key : (-(key + 1)) | 0x80000000);
  return keyView.getFloat32(0);
}

/** The residual form of an encoding needs an output that is not its minuend. */
export function checkResidualCall(n: number, dequantized: Float32Array | undefined, residualOf: Float32Array | undefined): void {
  if (!residualOf) return;
  if (!dequantized || residualOf.length < n || dequantized === residualOf) {
    throw new ShapeError(`encodeCodebook: residualOf needs ${n} values and a dequantized output other than itself`);
  }
}

export function checkDecodeCall({ codes, absmax, table, blockSize, out }: DecodeCall): void {
  if (!Number.isInteger(blockSize) || blockSize < 1) throw new ShapeError(`decodeCodebook: block size ${blockSize}`);
  if (out.length < codes.length || absmax.length < Math.ceil(codes.length / blockSize) || table.length > 256) {
    throw new ShapeError(`decodeCodebook: ${codes.length} codes, ${absmax.length} scales, ${out.length} outputs, ${table.length} table entries`);
  }
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
    // An absmax below ~2.9e-39 makes fl32(1/absmax) infinite: ±Inf goes to the end codes, as in
    // bitsandbytes' comparison tree (and 0·Inf = NaN to code 0, as there), not past the lookup.
    const s = clampUnit(Math.fround(values[i]! * reciprocal));
    const bucket = ((s + 1) * half) | 0;
    const code = below[bucket]! + (s > inside[bucket]! ? 1 : 0);
    codes[i] = code;
    if (dequantized) dequantized[i] = Math.fround(table[code]! * scale);
  }
}


/** x limited to [−1, 1]; NaN stays NaN. */
function clampUnit(x: number): number {
  return x > 1 ? 1 : x < -1 ? -1 : x;
}

function encodePeft(values: Float32Array, start: number, end: number, scale: number, spec: CodebookSpec, codes: Uint8Array, dequantized?: Float32Array): void {
  const { table, lookup } = spec;
  const { below, inside } = lookup;
  const half = LOOKUP_BUCKETS / 2;
  for (let i = start; i < end; i++) {
    const s = Math.fround(values[i]! / scale);
    const bucket = ((s + 1) * half) | 0;
    const code = below[bucket]! + (s > inside[bucket]! ? 1 : 0);
    codes[i] = code;
    if (dequantized) dequantized[i] = Math.fround(table[code]! * scale);
  }
}

/** Inverse of quantizeBlocks: table[code] · absmax in float32. */
export function dequantizeBlocks(codes: Uint8Array, absmax: Float32Array, table: Float32Array, blockSize: number, out: Float32Array): Float32Array {
  for (let start = 0, block = 0; start < codes.length; start += blockSize, block++) {
    const scale = absmax[block]!;
    const end = Math.min(start + blockSize, codes.length);
    for (let i = start; i < end; i++) out[i] = table[codes[i]!]! * scale;
  }
  return out;
}
