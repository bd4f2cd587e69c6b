import type { KernelBackend } from "../kernels/backend.js";
import { tsBackend } from "../kernels/ts-backend.js";
import { transpose, type Matrix } from "../tensor/matrix.js";
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
export function exactTruncatedSvd(matrix: Matrix, rank: number, backend: KernelBackend = tsBackend): { u: Float32Array; s: Float64Array; v: Float32Array } {
  const { rows: m, cols: n, data } = matrix;
  const wide = m < n; // Gram of the smaller side: RRᵀ (m×m) when wide, RᵀR (n×n) otherwise
  const size = wide ? m : n;
  // Values far from 1 go into the float32 products scaled by an exact power of two (their squares
  // would overflow or underflow); the eigenvectors do not depend on it, the singular values come below.
  const exponent = gramScaleExponent(data);
  const scaled = exponent === 0 ? data : data.map((value) => value * 2 ** -exponent);
  const tall = wide ? transpose({ rows: m, cols: n, data: scaled }).data : scaled;
  // The eigensolver's O(size³) steps run on the backend's float64 kernels where it has them.
  let { values, vectors } = topEigenpairs(gramMatrix(tall, wide ? n : m, size, backend), size, rank, backend);
  // The float32 partial sums perturb the Gram matrix by ~1e-6 of its largest eigenvalue, harmless for
  // the flat spectra of LoftQ residuals but not when λ₁ dwarfs λ_r (a large mean, a decaying or
  // rank-deficient spectrum): the vectors near the cut would tilt by 1e-6·λ₁/gap. Then float64 throughout.
  if (!(values[rank - 1]! * GRAM_FLOAT32_MAX_SPREAD >= values[0]!)) {
    ({ values, vectors } = topEigenpairs(gramMatrix64(tall, wide ? n : m, size), size, rank, backend));
  }
  checkSpectrum(values, matrix);
  // The other side's vectors R·v/σ (or Rᵀ·u/σ), in float64 from the unscaled data, with σ = ‖R·v‖:
  // accurate to float32 rounding, where √λ of the float32-accumulated Gram would leave the zero
  // singular values of a rank-deficient matrix at ~1e-3 of the largest.
  const otherSize = wide ? n : m;
  const other = new Float64Array(otherSize * rank);
  const s = new Float64Array(rank);
  for (let j = 0; j < rank; j++) {
    let squares = 0;
    for (let i = 0; i < otherSize; i++) {
      let sum = 0;
      if (wide) for (let p = 0; p < m; p++) sum += data[p * n + i]! * vectors[p * rank + j]!;
      else for (let p = 0; p < n; p++) sum += data[i * n + p]! * vectors[p * rank + j]!;
      other[i * rank + j] = sum;
      squares += sum * sum;
    }
    s[j] = Math.sqrt(squares);
    const inverse = s[j]! > 0 ? 1 / s[j]! : 0;
    for (let i = 0; i < otherSize; i++) other[i * rank + j]! *= inverse;
  }
  // Zero singular values (rank below r) leave those columns of the other side zero or noise, and
  // the eigenvectors of a zero eigenvalue shared by many need not come out orthogonal either.
  completeNullSpace(s, rank, [[vectors, size], [other, otherSize]]);
  const u = wide ? vectors : other;
  const v = wide ? other : vectors;
  applySignConvention(u, v, m, rank, rank);
  return { u: Float32Array.from(u), s, v: Float32Array.from(v) };
}

/** Largest λ₁/λ_r for which the float32-panel Gram matrix is used (see exactTruncatedSvd). */
export const GRAM_FLOAT32_MAX_SPREAD = 100;

/** XᵀX in float64 throughout (a scalar loop: ~70 ms at 512×256), for spectra too wide for the panels. */
function gramMatrix64(tall: Float32Array, rows: number, size: number): Float64Array {
  const gram = new Float64Array(size * size);
  for (let row = 0; row < rows; row++) {
    const base = row * size;
    for (let p = 0; p < size; p++) {
      const value = tall[base + p]!;
      if (value === 0) continue;
      const out = p * size;
      for (let q = 0; q <= p; q++) gram[out + q]! += value * tall[base + q]!;
    }
  }
  for (let i = 0; i < size; i++) for (let j = 0; j < i; j++) gram[j * size + i] = gram[i * size + j]!;
  return gram;
}

/** Largest |value| up to which the Gram products need no scaling (squares summed 64 at a time stay finite). */
export const GRAM_SAFE_EXPONENT = 40;

/** log2 of the power of two the data is divided by for the Gram products: 0 unless max |x| lies beyond 2^±40. */
function gramScaleExponent(data: Float32Array): number {
  let largest = 0;
  for (let i = 0; i < data.length; i++) largest = Math.max(largest, Math.abs(data[i]!));
  if (!(largest > 0) || !Number.isFinite(largest)) return 0;
  const exponent = Math.round(Math.log2(largest));
  return Math.abs(exponent) <= GRAM_SAFE_EXPONENT ? 0 : exponent;
}

/** Rows per float32 partial Gram matrix: short sums in float32, the sum of the partials in float64. */
export const GRAM_PANEL_ROWS = 64;

/**
 * XᵀX (size×size, float64) of a tall X (rows×size): the partial products of GRAM_PANEL_ROWS rows run
 * as float32 gemms on the backend (each sums ≤ 64 terms: relative error ~1e-6) and are accumulated in
 * float64. A scalar float64 loop took ~70 ms at 512×256, the panels a few ms.
 */
function gramMatrix(tall: Float32Array, rows: number, size: number, backend: KernelBackend): Float64Array {
  const gram = new Float64Array(size * size);
  const partial = new Float32Array(size * size);
  for (let start = 0; start < rows; start += GRAM_PANEL_ROWS) {
    const count = Math.min(GRAM_PANEL_ROWS, rows - start);
    const panel = tall.subarray(start * size, (start + count) * size);
    backend.gemm({ transA: true, transB: false, m: size, n: size, k: count, alpha: 1, a: panel, b: panel, beta: 0, c: partial });
    for (let i = 0; i < partial.length; i++) gram[i]! += partial[i]!;
  }
  return gram;
}
