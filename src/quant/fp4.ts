import { FP4_TABLE_CODE_ORDER } from "./tables.js";

/**
 * bitsandbytes FP4 (E2M1) block quantization, CUDA semantics: s = x · fl32(1/absmax); the sign bit
 * (bit 3) is set when x < 0; the magnitude code comes from a decision tree on |s| with strict `>`.
 * The thresholds are bnb's float literals (note 0.583333, not the exact midpoint 0.58333334).
 */
const MAGNITUDE_THRESHOLDS = Float32Array.from([0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333, 0.8333333]);
/** Code for each magnitude interval, smallest first: 0, 1/192, 1/6, 1/4, 1/3, 1/2, 2/3, 1. */
const MAGNITUDE_CODES = [0, 1, 6, 7, 4, 5, 2, 3];

export function quantizeFp4Blocks(values: Float32Array, blockSize: number, codes: Uint8Array, absmax: Float32Array, dequantized?: Float32Array): void {
  const n = values.length;
  for (let block = 0, start = 0; start < n; block++, start += blockSize) {
    const end = Math.min(start + blockSize, n);
    let max = 0;
    for (let i = start; i < end; i++) max = Math.max(max, Math.abs(values[i]!));
    absmax[block] = max;
    const reciprocal = Math.fround(1 / max);
    for (let i = start; i < end; i++) {
      const x = values[i]!;
      const magnitude = Math.abs(Math.fround(x * reciprocal));
      let interval = 0;
      while (interval < MAGNITUDE_THRESHOLDS.length && magnitude > MAGNITUDE_THRESHOLDS[interval]!) interval++;
      const code = MAGNITUDE_CODES[interval]! | (x < 0 ? 8 : 0);
      codes[i] = code;
      if (dequantized) dequantized[i] = Math.fround(FP4_TABLE_CODE_ORDER[code]! * max);
    }
  }
}
