import { ShapeError } from "../errors.js";
import type { Matrix } from "../tensor/matrix.js";

/**
 * Rotary position embedding (Llama's, rotate-half layout): within each head of width dₕ, element c
 * (c < dₕ/2) and c + dₕ/2 form a pair rotated by position·θ_c with θ_c = base^(−2c/dₕ). The
 * rotation is orthogonal, so the backward pass is the same rotation with the angle negated.
 * Rows are a batch of sequences of `sequenceLength` tokens laid end to end (position = row mod
 * sequenceLength); the default is one sequence.
 */
export function applyRope(x: Matrix, heads: number, direction: 1 | -1 = 1, sequenceLength = x.rows, base = 10000): Matrix {
  const { rows, cols, data } = x;
  if (rows % sequenceLength !== 0) throw new ShapeError(`${rows} rows are not a whole number of ${sequenceLength}-token sequences`);
  if (!Number.isInteger(heads) || heads < 1 || cols % heads !== 0 || (cols / heads) % 2 !== 0) {
    throw new ShapeError(`${cols} columns do not split into ${heads} heads of an even width`);
  }
  if (!Number.isInteger(sequenceLength) || sequenceLength < 1) throw new ShapeError(`sequenceLength must be a positive integer, got ${sequenceLength}`);
  const dh = cols / heads;
  const half = dh / 2;
  // One cos/sin table per call instead of a pow and two trig calls per element.
  const cosines = new Float64Array(sequenceLength * half);
  const sines = new Float64Array(sequenceLength * half);
  for (let position = 0; position < sequenceLength; position++) {
    for (let c = 0; c < half; c++) {
      const angle = direction * position * base ** ((-2 * c) / dh);
      cosines[position * half + c] = Math.cos(angle);
      sines[position * half + c] = Math.sin(angle);
    }
  }
  const out = new Float32Array(data.length);
  for (let row = 0; row < rows; row++) {
    const table = (row % sequenceLength) * half;
    for (let h = 0; h < heads; h++) {
      for (let c = 0; c < half; c++) {
        const cos = cosines[table + c]!;
        const sin = sines[table + c]!;
        const i = row * cols + h * dh + c;
        const a = data[i]!;
        const b = data[i + half]!;
        out[i] = a * cos - b * sin;
        out[i + half] = a * sin + b * cos;
      }
    }
  }
  return { rows, cols, data: out };
}
