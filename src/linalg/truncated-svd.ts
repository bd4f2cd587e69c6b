import { InvalidArgumentError } from "../errors.js";
import type { KernelBackend } from "../kernels/backend.js";
import { getBackend } from "../kernels/registry.js";
import type { Matrix } from "../tensor/matrix.js";
import { exactTruncatedSvd } from "./exact-truncated-svd.js";
import { householderQr } from "./householder-qr.js";
import { jacobiSvd } from "./jacobi-svd.js";
import { gaussianArray, mulberry32 } from "./random.js";
import { applySignConvention } from "./sign-convention.js";

/**
 * Rank-r truncated SVD by randomized subspace iteration (Halko, Martinsson & Tropp 2011, alg. 4.4)
 * with a Householder re-orthonormalisation after every product. All O(m·n) work is in the
 * backend's gemm; the k×k and n×k steps run in float64.
 *
 * Per call: 2·(powerIterations + 1) passes over M, each a product with a thin m×k or n×k block
 * (k = rank + oversample). A warm `start` subspace (e.g. the previous LoftQ iteration's right
 * singular vectors) converges in fewer passes.
 */
export interface TruncatedSvdOptions {
  rank: number;
  /** Extra sketch columns beyond the rank (default max(8, rank/2)). */
  oversample?: number;
  /** Power (subspace) iterations (default 2). */
  powerIterations?: number;
  seed?: number;
  /** n×k' row-major starting basis for the right subspace; padded with random columns up to k. */
  start?: Float32Array;
  backend?: KernelBackend;
  /**
   * "randomized" (subspace iteration), "exact" (Gram eigenpairs, O(m·n·min(m, n))) or "auto"
   * (default): exact when min(m, n) ≤ EXACT_SVD_MAX_DIM, where it is cheap and iterative methods
   * would need many passes to pin down the top subspace of a nearly flat spectrum.
   */
  method?: "auto" | "exact" | "randomized";
}

export interface TruncatedSvd {
  /** m×r, row-major, orthonormal columns. */
  u: Float32Array;
  /** r singular values, descending. */
  s: Float64Array;
  /** n×r, row-major, orthonormal columns (M ≈ U·diag(S)·Vᵀ). */
  v: Float32Array;
  rank: number;
  /** n×k right basis, reusable as the next call's `start`. */
  subspace: Float32Array;
  subspaceSize: number;
}

export const DEFAULT_POWER_ITERATIONS = 2;
export const EXACT_SVD_MAX_DIM = 512;

export function defaultOversample(rank: number): number {
  return Math.max(8, Math.ceil(rank / 2));
}

export function truncatedSvd(matrix: Matrix, options: TruncatedSvdOptions): TruncatedSvd {
  const { rows: m, cols: n, data } = matrix;
  const rank = options.rank;
  if (!Number.isInteger(rank) || rank < 1 || rank > Math.min(m, n)) {
    throw new InvalidArgumentError(`rank must be an integer in 1..${Math.min(m, n)} for a ${m}×${n} matrix, got ${rank}`);
  }
  const method = options.method ?? "auto";
  if (method === "exact" || (method === "auto" && Math.min(m, n) <= EXACT_SVD_MAX_DIM)) {
    const { u, s, v } = exactTruncatedSvd(matrix, rank);
    return { u, s, v, rank, subspace: v, subspaceSize: rank };
  }
  const backend = options.backend ?? getBackend();
  const k = Math.min(rank + (options.oversample ?? defaultOversample(rank)), m, n);
  const powerIterations = options.powerIterations ?? DEFAULT_POWER_ITERATIONS;
  const random = mulberry32(options.seed ?? 0);

  const omega = backend.allocate(n * k);
  const y = backend.allocate(m * k);
  try {
    gaussianArray(n * k, random, omega);
    if (options.start) {
      const startCols = Math.min(options.start.length / n, k);
      for (let i = 0; i < n; i++) for (let j = 0; j < startCols; j++) omega[i * k + j] = options.start[i * (options.start.length / n) + j]!;
    }
    const multiply = (transA: boolean, out: Float32Array, basis: Float32Array) =>
      backend.gemm({ transA, transB: false, m: transA ? n : m, n: k, k: transA ? m : n, alpha: 1, a: data, b: basis, beta: 0, c: out });
    // Range finder: Y = M·Ω, then alternate Z = Mᵀ·Q, Y = M·Z with orthonormalisation in between.
    multiply(false, y, omega);
    orthonormalizeInPlace(y, m, k);
    for (let i = 0; i < powerIterations; i++) {
      multiply(true, omega, y);
      orthonormalizeInPlace(omega, n, k);
      multiply(false, y, omega);
      orthonormalizeInPlace(y, m, k);
    }
    // Bᵀ = Mᵀ·Q (n×k). Bᵀ = Q₂·R₂, R₂ᵀ = Us·S·Vsᵀ  ⇒  M ≈ Q·Us · S · (Q₂·Vs)ᵀ.
    multiply(true, omega, y);
    const { q: q2, r: r2 } = householderQr(omega, n, k);
    const r2t = new Float64Array(k * k);
    for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) r2t[i * k + j] = r2[j * k + i]!;
    const small = jacobiSvd(r2t, k, k);
    const u = new Float32Array(m * rank);
    const uFull = new Float64Array(k * rank);
    for (let i = 0; i < k; i++) for (let j = 0; j < rank; j++) uFull[i * rank + j] = small.u[i * k + j]!;
    backend.gemm({ transA: false, transB: false, m, n: rank, k, alpha: 1, a: y, b: Float32Array.from(uFull), beta: 0, c: u });
    const subspace = new Float32Array(n * k);
    const v = new Float32Array(n * rank);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < k; j++) {
        let sum = 0;
        for (let p = 0; p < k; p++) sum += q2[i * k + p]! * small.v[p * k + j]!;
        subspace[i * k + j] = sum;
        if (j < rank) v[i * rank + j] = sum;
      }
    }
    applySignConvention(u, v, m, rank, rank);
    return { u, s: small.s.slice(0, rank), v, rank, subspace, subspaceSize: k };
  } finally {
    backend.release(omega);
    backend.release(y);
  }
}

/** Replaces the columns of a rows×cols float32 block by an orthonormal basis of their span. */
function orthonormalizeInPlace(block: Float32Array, rows: number, cols: number): void {
  const { q } = householderQr(block, rows, cols);
  for (let i = 0; i < q.length; i++) block[i] = q[i]!;
}
