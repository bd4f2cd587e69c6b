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
  /** float32 midpoints of adjacent table entries (bnb decision thresholds). */
  readonly thresholds: Float32Array;
  readonly selection: CodeSelection;
  readonly blockSize: number;
  /**
   * Code for every element of an all-zero block. Upstream divides by zero there: PEFT (0/0) and bnb
   * CUDA (0·∞) get NaN and fall to code 0, which dequantizes to −0; bnb's CPU path clamps the
   * absmax and gets the code of 0.0.
   */
  readonly zeroBlockCode: number;
}

/** Quantizes `values` into table indices (one byte each) and per-block absmax. */
export function quantizeBlocks(values: Float32Array, spec: CodebookSpec, codes: Uint8Array, absmax: Float32Array, dequantized?: Float32Array): void {
  const { table, thresholds, selection, blockSize } = spec;
  const n = values.length;
  const last = table.length - 1;
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
    const reciprocal = Math.fround(1 / scale);
    for (let i = start; i < end; i++) {
      const s = selection === "bnb" ? Math.fround(values[i]! * reciprocal) : Math.fround(values[i]! / scale);
      // Binary search for #{thresholds < s}; NaN compares false everywhere and lands on 0.
      let lo = 0;
      let hi = thresholds.length;
      if (s === s) {
        while (lo < hi) {
          const mid = (lo + hi) >>> 1;
          if (thresholds[mid]! < s) lo = mid + 1;
          else hi = mid;
        }
      }
      let code = lo;
      if (selection === "peft" && s === s) code = nearestInFloat32(s, table, code, last);
      codes[i] = code;
      if (dequantized) dequantized[i] = Math.fround(table[code]! * scale);
    }
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
