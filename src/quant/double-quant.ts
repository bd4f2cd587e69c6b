import { dynamicMap8Bit, midpoints } from "./tables.js";

/**
 * bitsandbytes double quantization of 4-bit absmax values (`compress_statistics=True`):
 * offset = mean(absmax); (absmax − offset) is quantized block-wise (256 per block) with the signed
 * 8-bit dynamic map, the nested absmax kept in float32. The mean is accumulated in float64 and
 * rounded to float32 (upstream's reduction order is backend-dependent, so not bit-reproducible).
 */
export const NESTED_BLOCK_SIZE = 256;

export interface DoubleQuantized {
  readonly codes: Uint8Array;
  readonly nestedAbsmax: Float32Array;
  readonly offset: number;
  readonly blockSize: number;
  readonly map: Float32Array;
}

let cachedMap: { map: Float32Array; thresholds: Float32Array } | undefined;
function dynamicMap() {
  if (!cachedMap) {
    const map = dynamicMap8Bit();
    cachedMap = { map, thresholds: midpoints(map) };
  }
  return cachedMap;
}

export function doubleQuantize(absmax: Float32Array): DoubleQuantized {
  const { map, thresholds } = dynamicMap();
  let sum = 0;
  for (let i = 0; i < absmax.length; i++) sum += absmax[i]!;
  const offset = Math.fround(absmax.length === 0 ? 0 : sum / absmax.length);
  const codes = new Uint8Array(absmax.length);
  const nestedAbsmax = new Float32Array(Math.ceil(absmax.length / NESTED_BLOCK_SIZE));
  for (let block = 0; block < nestedAbsmax.length; block++) {
    const start = block * NESTED_BLOCK_SIZE;
    const end = Math.min(start + NESTED_BLOCK_SIZE, absmax.length);
    let max = 0;
    for (let i = start; i < end; i++) max = Math.max(max, Math.abs(Math.fround(absmax[i]! - offset)));
    nestedAbsmax[block] = max;
    const reciprocal = Math.fround(1 / max);
    for (let i = start; i < end; i++) {
      const s = max === 0 ? 0 : Math.fround(Math.fround(absmax[i]! - offset) * reciprocal);
      let lo = 0;
      let hi = thresholds.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if (thresholds[mid]! < s) lo = mid + 1;
        else hi = mid;
      }
      codes[i] = lo;
    }
  }
  return { codes, nestedAbsmax, offset, blockSize: NESTED_BLOCK_SIZE, map };
}

/** absmax = map[code] · nestedAbsmax + offset, in float32. */
export function doubleDequantize(dq: DoubleQuantized, out: Float32Array = new Float32Array(dq.codes.length)): Float32Array {
  for (let i = 0; i < dq.codes.length; i++) {
    out[i] = Math.fround(Math.fround(dq.map[dq.codes[i]!]! * dq.nestedAbsmax[(i / dq.blockSize) | 0]!) + dq.offset);
  }
  return out;
}
