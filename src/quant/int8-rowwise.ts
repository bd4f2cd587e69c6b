import { OutOfRangeError } from "../errors.js";
import { F16_MAX, f16ToFloat32, float32ToF16 } from "../tensor/dtype.js";

/**
 * LLM.int8 row-wise absmax quantization, bitsandbytes CPU semantics (`Int8Params` /
 * `int8_vectorwise_quant`): the row is first rounded to float16, SCB = max|row| (float32),
 * q = round_half_even(x · fl32(127 / SCB)); dequantization is (q · SCB) · fl32(1/127).
 */
export const INV_127 = Math.fround(1 / 127);

export function quantizeInt8Rows(values: Float32Array, rows: number, cols: number, codes: Int8Array, scales: Float32Array, dequantized?: Float32Array): void {
  for (let r = 0; r < rows; r++) {
    const start = r * cols;
    let max = 0;
    for (let j = 0; j < cols; j++) {
      const half = toHalf(values[start + j]!);
      // bitsandbytes would get an infinite scale and NaN codes for the whole row.
      if (half === Infinity || half === -Infinity) {
        throw new OutOfRangeError(`int8: value ${values[start + j]} at row ${r}, column ${j} is outside float16's range (±${F16_MAX}), which LLM.int8 rounds rows to first`);
      }
      max = Math.max(max, Math.abs(half));
    }
    scales[r] = max;
    const factor = Math.fround(127 / max);
    for (let j = 0; j < cols; j++) {
      const q = max === 0 ? 0 : roundHalfEven(Math.fround(toHalf(values[start + j]!) * factor));
      codes[start + j] = q;
      if (dequantized) dequantized[start + j] = Math.fround(Math.fround(q * max) * INV_127);
    }
  }
}

export function dequantizeInt8Rows(codes: Int8Array, scales: Float32Array, cols: number, out: Float32Array): Float32Array {
  for (let start = 0, row = 0; start < codes.length; start += cols, row++) {
    const scale = scales[row]!;
    const end = Math.min(start + cols, codes.length);
    for (let i = start; i < end; i++) out[i] = Math.fround(codes[i]! * scale) * INV_127;
  }
  return out;
}

function toHalf(x: number): number {
  return f16ToFloat32(float32ToF16(x));
}

function roundHalfEven(x: number): number {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}
