import { normalQuantile } from "./normal.js";

/**
 * Code tables, built in code. All values are float32; arithmetic follows the upstream recipe step
 * by step (float32 linspace, float64 quantile rounded to float32, float32 division) so that the
 * tables reproduce upstream bit for bit.
 */

/** The offset both PEFT's NFQuantizer and bitsandbytes use for normal-float tables. */
export const NORMAL_FLOAT_OFFSET = 0.9677083;

/**
 * How torch.linspace rounds on float32. Both count the first half up from `start` and the second
 * half down from `end` (`i < steps/2 ? start + step·i : end − step·(steps−1−i)`), with step in float32.
 * - "scalar-fma": every element is one fused multiply-add (the scalar kernel; bitsandbytes' dynamic
 *   map as dumped from a real install matches this).
 * - "torch-cpu": PyTorch's vectorised CPU kernel (what produced PEFT's NF tables in the reference
 *   vectors): elements go in pairs of 8-lane vectors while 16 remain; each vector's base is a fused
 *   multiply-add at its first index (start- or end-anchored by that index alone) and lane j adds
 *   the separately rounded j·step; the tail uses the scalar rule.
 */
export type LinspaceRounding = "scalar-fma" | "torch-cpu";

export function linspaceFloat32(start: number, end: number, steps: number, rounding: LinspaceRounding = "torch-cpu"): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 1) {
    out[0] = start;
    return out;
  }
  const s = Math.fround(start);
  const e = Math.fround(end);
  const step = Math.fround((e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  const anchored = (i: number) => (i < halfway ? fusedMultiplyAdd(step, i, s) : fusedMultiplyAdd(-step, steps - 1 - i, e));
  let next = 0;
  if (rounding === "torch-cpu") {
    const lanes = 8;
    for (; next + 2 * lanes <= steps; next += 2 * lanes) {
      for (const first of [next, next + lanes]) {
        const base = anchored(first);
        for (let j = 0; j < lanes; j++) out[first + j] = Math.fround(base + Math.fround(j * step));
      }
    }
  }
  for (; next < steps; next++) out[next] = anchored(next);
  return out;
}

/**
 * fround(a·b + c) with a single rounding, as a float32 FMA would give. a·b is exact in float64
 * here (float32 × small integer); the float64 sum can only mislead fround when it lands exactly on
 * a float32 midpoint, in which case the exact residual (TwoSum) says which way to go.
 */
function fusedMultiplyAdd(a: number, b: number, c: number): number {
  const product = a * b;
  const sum = product + c;
  const virtualC = sum - product;
  const residual = product - (sum - virtualC) + (c - virtualC);
  const rounded = Math.fround(sum);
  if (residual === 0 || rounded === sum) return rounded;
  const other = sum > rounded ? nextFloat32(rounded, 1) : nextFloat32(rounded, -1);
  if (Math.abs(sum - rounded) !== Math.abs(other - sum)) return rounded;
  return residual > 0 === other > rounded ? other : rounded;
}

function nextFloat32(value: number, direction: 1 | -1): number {
  const view = new Float32Array([value]);
  const bits = new Int32Array(view.buffer);
  if (value === 0) return direction * 2 ** -149;
  bits[0]! += value > 0 === direction > 0 ? 1 : -1;
  return view[0]!;
}

/** PEFT / LoftQ `create_normal_map(offset, symmetric=False)`: 2^(b−1)−1 negatives, 0, 2^(b−1) positives. */
export function normalFloatTable(bits: number, offset = NORMAL_FLOAT_OFFSET): Float32Array {
  const levels = 2 ** bits;
  const positiveP = linspaceFloat32(offset, 0.5, levels / 2 + 1).subarray(0, levels / 2);
  const negativeP = linspaceFloat32(offset, 0.5, levels / 2).subarray(0, levels / 2 - 1);
  const values: number[] = [];
  for (const p of positiveP) values.push(Math.fround(normalQuantile(p)));
  values.push(0);
  for (const p of negativeP) values.push(Math.fround(-normalQuantile(p)));
  values.sort((a, b) => a - b);
  const max = values[values.length - 1]!;
  return Float32Array.from(values, (v) => Math.fround(v / max));
}

/**
 * A symmetric normal-float table: 2^b levels at the normal quantiles of equally spaced
 * probabilities, scaled so the extremes are ±1. Unlike the upstream asymmetric table it has no
 * exact zero, which at 2 bits buys one more level on the negative side (upstream NF2 has a single
 * negative level) and cuts the error on Gaussian weights substantially.
 */
export function symmetricNormalFloatTable(bits: number, offset = NORMAL_FLOAT_OFFSET): Float32Array {
  const levels = 2 ** bits;
  const out = new Float32Array(levels);
  const top = normalQuantile(offset);
  for (let i = 0; i < levels; i++) {
    const p = 1 - offset + ((2 * offset - 1) * i) / (levels - 1);
    out[i] = Math.fround(normalQuantile(p) / top);
  }
  out[0] = -1;
  out[levels - 1] = 1;
  return out;
}

/** `torch.linspace(-1, 1, 2^b)`: the asymmetric uniform table. */
export function uniformTable(bits: number): Float32Array {
  return linspaceFloat32(-1, 1, 2 ** bits);
}

/** bitsandbytes FP4 (E2M1) quant_map in code order: bit 3 is the sign. */
export const FP4_TABLE_CODE_ORDER = Float32Array.from(
  [0, 0.0625, 8, 12, 4, 6, 2, 3, -0, -0.0625, -8, -12, -4, -6, -2, -3],
  (v) => Math.fround(v / 12),
);

/**
 * bitsandbytes `create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`: the 8-bit map
 * used for double quantization of absmax values.
 */
export function dynamicMap8Bit(): Float32Array {
  const values: number[] = [];
  for (let i = 0; i < 7; i++) {
    const bounds = linspaceFloat32(0.1, 1, 2 ** i + 1, "scalar-fma");
    const scale = Math.fround(10 ** (i - 6));
    for (let j = 0; j + 1 < bounds.length; j++) {
      const mid = Math.fround(Math.fround(bounds[j]! + bounds[j + 1]!) / 2);
      const v = Math.fround(scale * mid);
      values.push(v, -v);
    }
  }
  values.push(0, 1);
  values.sort((a, b) => a - b);
  return Float32Array.from(values);
}

/** float32 midpoints between adjacent entries of an ascending table (bnb's decision thresholds). */
export function midpoints(table: Float32Array): Float32Array {
  const out = new Float32Array(table.length - 1);
  for (let i = 0; i < out.length; i++) out[i] = Math.fround((table[i]! + table[i + 1]!) / 2);
  return out;
}
