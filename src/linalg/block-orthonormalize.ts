import type { KernelBackend } from "../kernels/backend.js";
import { householderQr } from "./householder-qr.js";

/**
 * Orthonormalises a thin rows×cols block X in place, first against `previous` orthonormal blocks
 * (two rounds of block classical Gram–Schmidt: X −= P·(Pᵀ·X), the products on the backend) and
 * then within itself by CholeskyQR2 (Gram matrix in float64, X ← X·L⁻ᵀ, twice). Falls back to
 * Householder when the Gram matrix is not numerically positive definite (a rank-deficient block).
 * O(rows·cols²) JS work instead of a Householder QR of the whole Krylov basis.
 */
export function orthonormalizeBlock(x: Float32Array, rows: number, cols: number, previous: readonly Float32Array[], backend: KernelBackend): void {
  if (previous.length > 0) {
    const coefficients = new Float32Array(cols * cols);
    for (let round = 0; round < 2; round++) {
      for (const p of previous) {
        backend.gemm({ transA: true, transB: false, m: cols, n: cols, k: rows, alpha: 1, a: p, b: x, beta: 0, c: coefficients });
        backend.gemm({ transA: false, transB: false, m: rows, n: cols, k: cols, alpha: -1, a: p, b: coefficients, beta: 1, c: x });
      }
    }
  }
  for (let round = 0; round < 2; round++) {
    if (!choleskyOrthonormalize(x, rows, cols)) {
      const { q } = householderQr(x, rows, cols);
      for (let i = 0; i < q.length; i++) x[i] = q[i]!;
      return;
    }
  }
}

/** One CholeskyQR pass; false when the Cholesky factorisation breaks down. */
function choleskyOrthonormalize(x: Float32Array, rows: number, cols: number): boolean {
  const gram = new Float64Array(cols * cols);
  for (let i = 0; i < rows; i++) {
    const base = i * cols;
    for (let p = 0; p < cols; p++) {
      const v = x[base + p]!;
      for (let q = 0; q <= p; q++) gram[p * cols + q]! += v * x[base + q]!;
    }
  }
  // gram = L·Lᵀ (lower L, in place).
  let trace = 0;
  for (let p = 0; p < cols; p++) trace += gram[p * cols + p]!;
  for (let j = 0; j < cols; j++) {
    let diagonal = gram[j * cols + j]!;
    for (let p = 0; p < j; p++) diagonal -= gram[j * cols + p]! ** 2;
    if (!(diagonal > 1e-12 * trace)) return false;
    const root = Math.sqrt(diagonal);
    gram[j * cols + j] = root;
    for (let i = j + 1; i < cols; i++) {
      let sum = gram[i * cols + j]!;
      for (let p = 0; p < j; p++) sum -= gram[i * cols + p]! * gram[j * cols + p]!;
      gram[i * cols + j] = sum / root;
    }
  }
  // Each row r of X becomes r·L⁻ᵀ, i.e. solve L·yᵀ = rᵀ by forward substitution.
  const row = new Float64Array(cols);
  for (let i = 0; i < rows; i++) {
    const base = i * cols;
    for (let j = 0; j < cols; j++) {
      let sum = x[base + j]!;
      for (let p = 0; p < j; p++) sum -= gram[j * cols + p]! * row[p]!;
      row[j] = sum / gram[j * cols + j]!;
    }
    for (let j = 0; j < cols; j++) x[base + j] = row[j]!;
  }
  return true;
}
