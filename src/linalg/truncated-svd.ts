import { InvalidArgumentError, ShapeError } from "../errors.js";
import type { KernelBackend } from "../kernels/backend.js";
import { resolveBackend } from "../kernels/registry.js";
import { checkOptionKeys, optionKeysOf } from "../options.js";
import { assertFinite, checkMatrix, type Matrix } from "../tensor/matrix.js";
import { exactTruncatedSvd } from "./exact-truncated-svd.js";
import { orthonormalizeBlock } from "./block-orthonormalize.js";
import { topEigenpairs } from "./symmetric-eigenvalues.js";
import { checkSeed, gaussian, mulberry32 } from "./random.js";
import { completeNullSpace } from "./orthonormal-completion.js";
import { checkSpectrum } from "./spectrum-check.js";
import { applySignConvention } from "./sign-convention.js";

/**
 * Rank-r truncated SVD by a randomized block Krylov method (Musco & Musco 2015): each new block is
 * orthonormalised against the earlier ones and within itself after every product (block Gram–Schmidt,
 * CholeskyQR2; see orthonormalizeBlock), then Rayleigh–Ritz on the whole basis. All O(m·n) work is in
 * the backend's gemm; the small dense steps run in float64.
 *
 * Per call: 2·(powerIterations + 1) passes over M with a thin block of k = rank + oversample columns
 * (q + 1 products M·X and as many Mᵀ·Y). A warm `start` subspace (e.g. the previous LoftQ iteration's
 * right singular vectors) converges in fewer passes.
 */
export interface TruncatedSvdOptions {
  rank: number;
  /** Extra sketch columns beyond the rank (default 8). */
  oversample?: number;
  /** Krylov depth q: the basis has q + 1 blocks (default 4). */
  powerIterations?: number;
  seed?: number;
  /** n×k' row-major starting basis for the right subspace; padded with random columns up to k. */
  start?: Float32Array;
  /** Kernel backend or its name (default: the fastest registered). */
  backend?: KernelBackend | string;
  /**
   * "randomized" (block Krylov), "exact" (Gram eigenpairs, O(m·n·min(m, n))) or "auto"
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
  /** n×k right basis (k = subspace.length / n), reusable as the next call's `start`. */
  subspace: Float32Array;
}

/** Krylov depth: measured within 0.05% of the Eckart–Young optimum on NF2/NF4 LoftQ residuals. */
export const DEFAULT_POWER_ITERATIONS = 4;
export const EXACT_SVD_MAX_DIM = 256;
export const SVD_METHODS: readonly NonNullable<TruncatedSvdOptions["method"]>[] = ["auto", "exact", "randomized"];

export const DEFAULT_OVERSAMPLE = 8;
/**
 * Largest max |VᵀV − I| the randomized path returns as it is; beyond it V is orthonormalised again
 * (float32 CholeskyQR2 leaves ~1e-7–1e-6 itself).
 */
export const V_ORTHONORMALITY_TOLERANCE = 2e-6;
/**
 * Singular values up to 2^±PROJECTION_SAFE_EXPONENT need no scaling of the projected blocks (their
 * float32 squares stay normal); beyond it they are scaled to order one.
 */
export const PROJECTION_SAFE_EXPONENT = 40;
/** The largest power of two float32 holds is 2^127. */
const MAX_FLOAT32_EXPONENT = 127;

/**
 * log2 of the power of two the projected blocks are divided by: 0 while the first block's RMS column
 * norm (≈ the size of the leading singular values) lies within 2^±PROJECTION_SAFE_EXPONENT.
 */
function projectionScaleExponent(firstBlockSquares: number, k: number): number {
  const size = Math.sqrt(firstBlockSquares / k);
  if (!(size > 0) || !Number.isFinite(size)) return 0;
  const exponent = Math.round(Math.log2(size));
  return Math.abs(exponent) <= PROJECTION_SAFE_EXPONENT ? 0 : exponent;
}

const TRUNCATED_SVD_OPTION_KEYS = optionKeysOf<TruncatedSvdOptions>()(["rank", "oversample", "powerIterations", "seed", "start", "backend", "method"]);

export function truncatedSvd(matrix: Matrix, options: TruncatedSvdOptions): TruncatedSvd {
  checkOptionKeys(options, TRUNCATED_SVD_OPTION_KEYS, "truncatedSvd", false);
  checkMatrix(matrix, "truncatedSvd: matrix");
  const { rows: m, cols: n, data } = matrix;
  const rank = options.rank;
  if (!Number.isInteger(rank) || rank < 1 || rank > Math.min(m, n)) {
    throw new InvalidArgumentError(`rank must be an integer in 1..${Math.min(m, n)} for a ${m}×${n} matrix, got ${rank}`);
  }
  const method = options.method ?? "auto";
  if (!SVD_METHODS.includes(method)) throw new InvalidArgumentError(`method must be one of ${SVD_METHODS.join(", ")}, got ${String(method)}`);
  const oversample = options.oversample ?? DEFAULT_OVERSAMPLE;
  if (!Number.isInteger(oversample) || oversample < 0) throw new InvalidArgumentError(`oversample must be a non-negative integer, got ${oversample}`);
  const k = rank + oversample;
  const powerIterations = options.powerIterations ?? DEFAULT_POWER_ITERATIONS;
  if (!Number.isInteger(powerIterations) || powerIterations < 0) {
    throw new InvalidArgumentError(`powerIterations must be a non-negative integer, got ${powerIterations}`);
  }
  if (options.start !== undefined && (!(options.start instanceof Float32Array) || options.start.length === 0 || options.start.length % n !== 0)) {
    throw new ShapeError(`start must be an n×k' Float32Array (a positive multiple of n = ${n} values)`);
  }
  if (options.start !== undefined) assertFinite({ rows: n, cols: options.start.length / n, data: options.start }, "truncatedSvd: start");
  const seed = options.seed ?? 0;
  checkSeed(seed);
  const backend = resolveBackend(options.backend);
  const blocks = powerIterations + 1;
  // A Krylov basis as wide as the matrix is no cheaper than the exact path, and no more accurate.
  const krylovCoversAll = k * blocks >= Math.min(m, n);
  if (method === "exact" || krylovCoversAll || (method === "auto" && Math.min(m, n) <= EXACT_SVD_MAX_DIM)) {
    const { u, s, v } = exactTruncatedSvd(matrix, rank, backend);
    return { u, s, v, rank, subspace: v };
  }
  const random = mulberry32(seed);

  // Block Krylov (Musco & Musco 2015): span{MΩ, (MMᵀ)MΩ, …, (MMᵀ)^q MΩ}, each block
  // orthonormalised before the next product, then Rayleigh–Ritz on the whole space. For the nearly
  // flat spectra of quantization residuals it gets far closer to the optimum than plain subspace
  // iteration for the same number of passes.
  const width = k * blocks;
  const omega = backend.allocate(n * k);
  const basis = Array.from({ length: blocks }, () => backend.allocate(m * k));
  const projected = Array.from({ length: blocks }, () => backend.allocate(n * k));
  const run = () => {
    // The start's columns first, Gaussian columns after them (none when the start covers all k:
    // drawing n·k normals costs ~40 ms at k = 72).
    const startStride = options.start ? options.start.length / n : 0;
    const startCols = Math.min(startStride, k);
    // Only the start's span matters: its columns are taken at unit length (huge or tiny values would
    // otherwise overflow or underflow the first products).
    const startScale = new Float64Array(startCols);
    for (let i = 0; i < n; i++) for (let j = 0; j < startCols; j++) startScale[j]! += options.start![i * startStride + j]! ** 2;
    for (let j = 0; j < startCols; j++) startScale[j] = startScale[j]! > 0 && Number.isFinite(startScale[j]!) ? 1 / Math.sqrt(startScale[j]!) : 1;
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < startCols; j++) omega[i * k + j] = options.start![i * startStride + j]! * startScale[j]!;
      for (let j = startCols; j < k; j++) omega[i * k + j] = gaussian(random);
    }
    // Random directions for Krylov columns that collapse into the earlier span (the space stopped growing).
    const draw = () => gaussian(random);
    const multiply = (transA: boolean, out: Float32Array, block: Float32Array, alpha = 1) =>
      backend.gemm({ transA, transB: false, m: transA ? n : m, n: k, k: transA ? m : n, alpha, a: data, b: block, beta: 0, c: out });
    // Krylov blocks Q_b, each orthonormal to all earlier ones; P_b = Mᵀ·Q_b is both the next
    // block's seed and, for the Rayleigh–Ritz step, the b-th column block of Bᵀ = Mᵀ·Q.
    multiply(false, basis[0]!, omega);
    // P's entries are of the size of M's singular values, and the Rayleigh–Ritz Gram matrix of their
    // squares is formed in float32: it would overflow above σ ≈ 1.8e19 and underflow below ≈ 1e-19.
    // Far outside that range (never for real weights) P is kept scaled by a power of two, exactly,
    // and the singular values scaled back at the end; inside it nothing changes.
    const scaleExponent = projectionScaleExponent(backend.sumOfSquares(basis[0]!), k);
    // The scale goes into the gemm's float32 alpha, which cannot exceed 2^127. Singular values that
    // small mean entries among float32's subnormals (below ~1e-38, far below any real weight): the
    // exact path, which scales the matrix itself, takes those instead.
    if (-scaleExponent > MAX_FLOAT32_EXPONENT) return undefined;
    const projectionScale = 2 ** -scaleExponent;
    orthonormalizeBlock(basis[0]!, m, k, [], backend, draw);
    for (let b = 0; b < blocks; b++) {
      multiply(true, projected[b]!, basis[b]!, projectionScale);
      if (b + 1 < blocks) {
        multiply(false, basis[b + 1]!, projected[b]!);
        orthonormalizeBlock(basis[b + 1]!, m, k, basis.slice(0, b + 1), backend, draw);
      }
    }
    // B·Bᵀ (w×w) from the blocks of Bᵀ, in float64; its eigenpairs give B = Ub·S·Vᵀ.
    const gram = new Float64Array(width * width);
    const cross = new Float32Array(k * k);
    for (let x = 0; x < blocks; x++) {
      for (let y = 0; y <= x; y++) {
        backend.gemm({ transA: true, transB: false, m: k, n: k, k: n, alpha: 1, a: projected[x]!, b: projected[y]!, beta: 0, c: cross });
        for (let i = 0; i < k; i++) {
          for (let j = 0; j < k; j++) {
            gram[(x * k + i) * width + y * k + j] = cross[i * k + j]!;
            gram[(y * k + j) * width + x * k + i] = cross[i * k + j]!;
          }
        }
      }
    }
    const { values, vectors } = topEigenpairs(gram, width, k, backend);
    checkSpectrum(values, matrix);
    // Singular values of the scaled projection (what the factors below are built from).
    const s = values.map((lambda) => Math.sqrt(Math.max(lambda, 0)));
    // U = Q·Ub (m×r) and V = Bᵀ·Ub·S⁻¹ (n×k, the first r returned, all k kept as the warm start).
    const u = new Float32Array(m * rank);
    const subspace = new Float32Array(n * k);
    const ubRank = new Float32Array(k * rank);
    const ubScaled = new Float32Array(k * k);
    for (let b = 0; b < blocks; b++) {
      for (let i = 0; i < k; i++) {
        for (let j = 0; j < k; j++) {
          const value = vectors[(b * k + i) * k + j]!;
          if (j < rank) ubRank[i * rank + j] = value;
          ubScaled[i * k + j] = s[j]! > 0 ? value / s[j]! : 0;
        }
      }
      backend.gemm({ transA: false, transB: false, m, n: rank, k, alpha: 1, a: basis[b]!, b: ubRank, beta: b === 0 ? 0 : 1, c: u });
      backend.gemm({ transA: false, transB: false, m: n, n: k, k, alpha: 1, a: projected[b]!, b: ubScaled, beta: b === 0 ? 0 : 1, c: subspace });
    }
    const v = new Float32Array(n * rank);
    for (let i = 0; i < n; i++) for (let j = 0; j < rank; j++) v[i * rank + j] = subspace[i * k + j]!;
    // V's columns for zero singular values are Bᵀ·u/σ: noise or zero; U's too when the Krylov basis
    // itself collapsed (M = 0).
    completeNullSpace(s, rank, [[u, m], [v, n]]);
    // Vⱼ = Bᵀ·ubⱼ/σⱼ carries B's float32 rounding (~ε·σ₁) divided by σⱼ: orthonormal to ~1e-7 on LoftQ's
    // residuals (σ₁/σᵣ ≈ 1–10), to only ~1e-5 across five decades. Measured with one thin product (VᵀV)
    // and, when it is off, orthonormalised once more (CholeskyQR: a few more).
    if (orthonormalityLoss(v, n, rank, backend) > V_ORTHONORMALITY_TOLERANCE) orthonormalizeBlock(v, n, rank, [], backend, draw);
    applySignConvention(u, v, m, rank, rank);
    return { u, s: s.slice(0, rank).map((sigma) => sigma * 2 ** scaleExponent), v, rank, subspace };
  };
  let result: TruncatedSvd | undefined;
  try {
    // Every pass reads M and nothing writes it: backends that copy operands may copy it once.
    result = backend.withReadOnly ? backend.withReadOnly(data, run, { transposedProducts: blocks }) : run();
  } finally {
    for (const buffer of [omega, ...basis, ...projected]) backend.release(buffer);
  }
  if (result) return result;
  const { u, s, v } = exactTruncatedSvd(matrix, rank, backend);
  return { u, s, v, rank, subspace: v };
}

/** max |XᵀX − I| for the row-major rows×cols X, its Gram matrix formed on the backend. */
function orthonormalityLoss(x: Float32Array, rows: number, cols: number, backend: KernelBackend): number {
  const gram = new Float32Array(cols * cols);
  backend.gemm({ transA: true, transB: false, m: cols, n: cols, k: rows, alpha: 1, a: x, b: x, beta: 0, c: gram });
  let loss = 0;
  for (let i = 0; i < cols; i++) for (let j = 0; j < cols; j++) loss = Math.max(loss, Math.abs(gram[i * cols + j]! - (i === j ? 1 : 0)));
  return loss;
}
