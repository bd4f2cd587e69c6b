import type { Matrix } from "../tensor/matrix.js";

/**
 * Rotary position embedding (Llama's, rotate-half layout): within each head of width dₕ, element c
 * (c < dₕ/2) and c + dₕ/2 form a pair rotated by position·θ_c with θ_c = base^(−2c/dₕ). The
 * rotation is orthogonal, so the backward pass is the same rotation with the angle negated.
 */
export function applyRope(x: Matrix, heads: number, direction: 1 | -1 = 1, base = 10000): Matrix {
  const { rows, cols, data } = x;
  const dh = cols / heads;
  const half = dh / 2;
  const out = new Float32Array(data.length);
  for (let position = 0; position < rows; position++) {
    for (let h = 0; h < heads; h++) {
      for (let c = 0; c < half; c++) {
        const angle = direction * position * base ** ((-2 * c) / dh);
        const cos = Math.cos(angle);
        const sin = Math.sin(angle);
        const i = position * cols + h * dh + c;
        const a = data[i]!;
        const b = data[i + half]!;
        out[i] = a * cos - b * sin;
        out[i + half] = a * sin + b * cos;
      }
    }
  }
  return { rows, cols, data: out };
}
