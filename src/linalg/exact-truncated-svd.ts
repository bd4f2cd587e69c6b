import type { Matrix } from "../tensor/matrix.js";
import { completeNullSpace } from "./orthonormal-completion.js";
import { checkSpectrum } from "./spectrum-check.js";
import { applySignConvention } from "./sign-convention.js";
import { topEigenpairs } from "./symmetric-eigenvalues.js";

/**
 * The top-r singular triplets to working precision, through the Gram matrix of the smaller side
 * (accumulated in float64) and its top eigenpairs. O(m·n·min(m, n)); the choice for small
 * matrices, where LoftQ residuals (close to white noise) leave the top singular values so close
 * together that iterative methods converge slowly to the exact subspace.
 */
export function exactTruncatedSvd(matrix: Matrix, rank: number): { u: Float32Array; s: Float64Array; v: Float32Array } {
  const { rows: m, cols: n, data } = matrix;
  const wide = m < n; // Gram of the smaller side: RRᵀ (m×m) when wide, RᵀR (n×n) otherwise
  const size = wide ? m : n;
  const gram = new Float64Array(size * size);
  if (wide) {
    for (let i = 0; i < m; i++) {
      for (let j = 0; j <= i; j++) {
        let sum = 0;
        for (let p = 0; p < n; p++) sum += data[i * n + p]! * data[j * n + p]!;
        gram[i * size + j] = sum;
      }
    }
  } else {
    for (let row = 0; row < m; row++) {
      const base = row * n;
      for (let p = 0; p < n; p++) {
        const value = data[base + p]!;
        if (value === 0) continue;
        const out = p * size;
        for (let q = 0; q <= p; q++) gram[out + q]! += value * data[base + q]!;
      }
    }
  }
  for (let i = 0; i < size; i++) for (let j = 0; j < i; j++) gram[j * size + i] = gram[i * size + j]!;
  const { values, vectors } = topEigenpairs(gram, size, rank);
  checkSpectrum(values, matrix);
  const s = values.map((lambda) => Math.sqrt(Math.max(lambda, 0)));
  // The other side's vectors: R·v/σ (or Rᵀ·u/σ), in float64.
  const otherSize = wide ? n : m;
  const other = new Float64Array(otherSize * rank);
  for (let j = 0; j < rank; j++) {
    const inverse = s[j]! > 0 ? 1 / s[j]! : 0;
    for (let i = 0; i < otherSize; i++) {
      let sum = 0;
      if (wide) for (let p = 0; p < m; p++) sum += data[p * n + i]! * vectors[p * rank + j]!;
      else for (let p = 0; p < n; p++) sum += data[i * n + p]! * vectors[p * rank + j]!;
      other[i * rank + j] = sum * inverse;
    }
  }
  // Zero singular values (rank below r) leave those columns of the other side zero or noise, and
  // the eigenvectors of a zero eigenvalue shared by many need not come out orthogonal either.
  completeNullSpace(s, rank, [[vectors, size], [other, otherSize]]);
  const u = wide ? vectors : other;
  const v = wide ? other : vectors;
  applySignConvention(u, v, m, rank, rank);
  return { u: Float32Array.from(u), s, v: Float32Array.from(v) };
}
