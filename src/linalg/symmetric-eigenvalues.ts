import { InvalidArgumentError } from "../errors.js";
import { checkDenseArray } from "../tensor/matrix.js";
import type { KernelBackend } from "../kernels/backend.js";
import { tsBackend } from "../kernels/ts-backend.js";
import { applyReflectorsReference, tridiagonalizeReference } from "../kernels/tridiagonal.js";
import { orthogonalize } from "./orthonormal-completion.js";

/**
 * All eigenvalues of a dense symmetric matrix (float64): Householder reduction to tridiagonal form,
 * then implicit QR steps with Wilkinson shifts. O(n³) with a small constant and no eigenvectors:
 * the exact reference for singular values (via the Gram matrix) on matrices too large for Jacobi.
 */
export function symmetricEigenvalues(matrix: Float64Array, n: number, backend: KernelBackend = tsBackend): Float64Array {
  const { d, e } = tridiagonal(matrix, n, backend, false);
  tridiagonalQr(d, e);
  return d.sort((x, y) => y - x);
}

/**
 * The `count` largest eigenvalues (descending) and their unit eigenvectors (n×count, row-major):
 * eigenvalues from the tridiagonal QR, vectors by inverse iteration on the tridiagonal matrix
 * (O(n) per solve), re-orthogonalised against each other and mapped back through the reflectors.
 * The two O(n³) steps (the reduction and the mapping back) are backend kernels, float64 on every
 * backend; the reference backend is the default.
 */
export function topEigenpairs(matrix: Float64Array, n: number, count: number, backend: KernelBackend = tsBackend): { values: Float64Array; vectors: Float64Array } {
  const { d, e, reflectors } = tridiagonal(matrix, n, backend, true);
  const diagonal = Float64Array.from(d);
  const offDiagonal = Float64Array.from(e);
  tridiagonalQr(d, e);
  const values = d.sort((x, y) => y - x).slice(0, count);
  const scale = Math.max(Math.abs(values[0] ?? 0), Number.MIN_VALUE);
  const vectors = new Float64Array(n * count);
  const found: Float64Array[] = [];
  const lu = new ShiftedTridiagonalLu(diagonal, offDiagonal);
  for (let j = 0; j < count; j++) {
    // Shift a hair off the eigenvalue so the factorisation stays non-singular.
    const x = inverseIteration(lu, values[j]! + scale * 1e-14 * (j + 1), found);
    found.push(x);
    for (let i = 0; i < n; i++) vectors[i * count + j] = x[i]!;
  }
  // y = H_0 H_1 … H_{n−3} x for every vector at once.
  const call = { reflectors: reflectors!, n, x: vectors, count };
  if (backend.applyReflectors) backend.applyReflectors(call);
  else applyReflectorsReference(call);
  return { values, vectors };
}

/**
 * The tridiagonal form (d, e) of a symmetric matrix and, when asked for, its reflectors (n×n);
 * `matrix` is not modified. Backends without the kernel get the reference.
 */
function tridiagonal(matrix: Float64Array, n: number, backend: KernelBackend, withReflectors: boolean) {
  const d = new Float64Array(n);
  const e = new Float64Array(Math.max(n - 1, 0));
  const reflectors = withReflectors ? new Float64Array(n * n) : undefined;
  const call = { a: Float64Array.from(matrix.subarray(0, n * n)), n, d, e, ...(reflectors ? { reflectors } : {}) };
  if (backend.tridiagonalize) backend.tridiagonalize(call);
  else tridiagonalizeReference(call);
  return { d, e, reflectors };
}

/**
 * Solves (T − λI)x = b a few times (one LU, four solves), orthogonal to `previous`. Within a cluster
 * (the many zero eigenvalues of a rank-deficient Gram matrix) the solves do not turn the start vector,
 * so once earlier vectors of the cluster span its projection, x vanishes into rounding noise that is
 * orthogonal to nothing: then the iteration restarts from pseudo-random vectors (deterministic, other
 * ones for every eigenpair) until one keeps a part of its own.
 */
function inverseIteration(lu: ShiftedTridiagonalLu, lambda: number, previous: Float64Array[]): Float64Array {
  const n = lu.size;
  lu.factor(lambda);
  const x = new Float64Array(n);
  for (let attempt = 0; attempt <= MAX_RESTARTS; attempt++) {
    if (attempt === 0) for (let i = 0; i < n; i++) x[i] = 1 + ((i * 7919) % 13) / 13; // deterministic, generic start
    else fillPseudoRandom(x, previous.length * MAX_RESTARTS + attempt); // a different vector for every eigenpair and attempt
    let kept = true;
    for (let round = 0; round < 4 && kept; round++) {
      lu.solve(x);
      kept = orthogonalize(x, previous, VANISHED);
    }
    if (kept) return x;
  }
  x.fill(0); // never seen: a zero vector is at least harmless downstream (σ = 0, completed there)
  return x;
}

/** Restarts of inverse iteration from other start vectors before giving up on a vector. */
const MAX_RESTARTS = 32;

/** Below this fraction of its norm, what is left of x after projecting out `previous` is rounding noise. */
const VANISHED = 1e-10;

/** Uniform values in [−1, 1) from a small LCG seeded by `seed`: reproducible restart vectors. */
function fillPseudoRandom(x: Float64Array, seed: number): void {
  let state = (seed * 2654435761) >>> 0;
  for (let i = 0; i < x.length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    x[i] = state / 2 ** 31 - 1;
  }
}

/**
 * Gaussian elimination with partial pivoting on the tridiagonal T − λI (the fill-in stays within
 * a second super-diagonal), factored once per shift and replayed on each right-hand side. Previous
 * eigenvectors are kept in the tridiagonal basis, so orthogonalising there is the same as in the
 * original one (the reflectors are orthogonal).
 */
class ShiftedTridiagonalLu {
  private readonly diag: Float64Array;
  private readonly upper1: Float64Array;
  private readonly upper2: Float64Array;
  /** Row i + 1 −= factors[i] · row i, after rows i and i + 1 were swapped where swapped[i]. */
  private readonly factors: Float64Array;
  private readonly swapped: Uint8Array;

  constructor(private readonly d: Float64Array, private readonly e: Float64Array) {
    const n = d.length;
    this.diag = new Float64Array(n);
    this.upper1 = new Float64Array(n);
    this.upper2 = new Float64Array(n);
    this.factors = new Float64Array(n);
    this.swapped = new Uint8Array(n);
  }

  get size(): number {
    return this.d.length;
  }

  factor(lambda: number): void {
    const { d, e, diag, upper1, upper2, factors, swapped } = this;
    const n = d.length;
    for (let i = 0; i < n; i++) diag[i] = d[i]! - lambda;
    for (let i = 0; i < n - 1; i++) upper1[i] = e[i]!;
    upper1[n - 1] = 0;
    upper2.fill(0);
    const tiny = 1e-300;
    for (let i = 0; i < n - 1; i++) {
      // Row i + 1 holds e[i] at column i before its elimination.
      let sub = e[i]!;
      swapped[i] = Math.abs(sub) > Math.abs(diag[i]!) ? 1 : 0;
      if (swapped[i]) {
        // Swap rows i and i+1 (row i+1: [sub, diag, upper1] at columns i, i+1, i+2). Row i has no
        // entry beyond column i+2 and row i+1's upper2 is still 0, so it takes row i's.
        const [diagI, upper1I, upper2I] = [diag[i]!, upper1[i]!, upper2[i]!];
        diag[i] = sub;
        upper1[i] = diag[i + 1]!;
        upper2[i] = upper1[i + 1]!;
        sub = diagI;
        diag[i + 1] = upper1I;
        upper1[i + 1] = upper2I;
      }
      const pivot = Math.abs(diag[i]!) < tiny ? tiny : diag[i]!;
      diag[i] = pivot;
      const factor = sub / pivot;
      factors[i] = factor;
      diag[i + 1]! -= factor * upper1[i]!;
      upper1[i + 1]! -= factor * upper2[i]!;
    }
    if (n > 0 && Math.abs(diag[n - 1]!) < tiny) diag[n - 1] = tiny;
  }

  /** x ← (T − λI)⁻¹ x in place. */
  solve(x: Float64Array): void {
    const { diag, upper1, upper2, factors, swapped } = this;
    const n = diag.length;
    for (let i = 0; i < n - 1; i++) {
      if (swapped[i]) {
        const xi = x[i]!;
        x[i] = x[i + 1]!;
        x[i + 1] = xi;
      }
      x[i + 1]! -= factors[i]! * x[i]!;
    }
    for (let i = n - 1; i >= 0; i--) {
      let value = x[i]!;
      if (i + 1 < n) value -= upper1[i]! * x[i + 1]!;
      if (i + 2 < n) value -= upper2[i]! * x[i + 2]!;
      x[i] = value / diag[i]!;
    }
  }
}

/** Implicit symmetric QR on (d, e) in place; d ends up holding the eigenvalues. */
function tridiagonalQr(d: Float64Array, e: Float64Array): void {
  const n = d.length;
  // Negligible beside its neighbours or beside the whole matrix: a block of values ~1e-160 (the zero
  // eigenvalues of a rank-deficient Gram matrix, in rounding noise) must deflate too.
  let scale = 0;
  for (let i = 0; i < n; i++) scale = Math.max(scale, Math.abs(d[i]!) + (i < n - 1 ? Math.abs(e[i]!) : 0) + (i > 0 ? Math.abs(e[i - 1]!) : 0));
  const small = (i: number) => Math.abs(e[i]!) <= 1e-16 * (Math.abs(d[i]!) + Math.abs(d[i + 1]!)) || Math.abs(e[i]!) <= 1e-18 * scale;
  let high = n - 1;
  let guard = 0;
  while (high > 0) {
    if (small(high - 1)) {
      e[high - 1] = 0;
      high--;
      continue;
    }
    let low = high - 1;
    while (low > 0 && !small(low - 1)) low--;
    if (++guard > 100 * n) break; // never seen; keeps a pathological input from hanging
    // Wilkinson shift from the trailing 2×2 block.
    // Written as b·(b / (δ ± √(δ² + b²))) so that tiny b and δ neither underflow to 0/0 nor lose b².
    const delta = (d[high - 1]! - d[high]!) / 2;
    const b = e[high - 1]!;
    const denominator = delta + (delta >= 0 ? 1 : -1) * Math.hypot(delta, b);
    const shift = denominator === 0 ? d[high]! : d[high]! - b * (b / denominator);
    let x = d[low]! - shift;
    let z = e[low]!;
    for (let k = low; k < high; k++) {
      // √(x² + z²) directly (Math.hypot is several times slower), unless the squares overflow or underflow.
      let r = Math.sqrt(x * x + z * z);
      if (!(r > 1e-150 && r < 1e150)) r = Math.hypot(x, z);
      const c = r === 0 ? 1 : x / r;
      const s = r === 0 ? 0 : -z / r;
      if (k > low) e[k - 1] = r;
      const a = d[k]!;
      const b = e[k]!;
      const cc = d[k + 1]!;
      d[k] = c * c * a - 2 * c * s * b + s * s * cc;
      d[k + 1] = s * s * a + 2 * c * s * b + c * c * cc;
      e[k] = c * s * (a - cc) + (c * c - s * s) * b;
      if (k < high - 1) {
        z = -s * e[k + 1]!;
        e[k + 1] = c * e[k + 1]!;
      }
      x = e[k]!;
    }
  }
}

/**
 * Singular values (descending) of a rows×cols float32 matrix via the eigenvalues of its smaller
 * Gram matrix, accumulated in float64. Values below ~1e-8·σ₁ lose relative accuracy, which is
 * irrelevant for the tail-energy bounds this is used for.
 */
export function singularValues(data: Float32Array, rows: number, cols: number): Float64Array {
  checkDenseArray(data, rows, cols, "singularValues: data");
  const small = Math.min(rows, cols);
  const gram = new Float64Array(small * small);
  if (rows <= cols) {
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j <= i; j++) {
        let sum = 0;
        for (let p = 0; p < cols; p++) sum += data[i * cols + p]! * data[j * cols + p]!;
        gram[i * small + j] = gram[j * small + i] = sum;
      }
    }
  } else {
    const column = new Float64Array(rows);
    const columns = Array.from({ length: cols }, (_, j) => {
      for (let i = 0; i < rows; i++) column[i] = data[i * cols + j]!;
      return Float64Array.from(column);
    });
    for (let i = 0; i < cols; i++) {
      for (let j = 0; j <= i; j++) {
        let sum = 0;
        const ci = columns[i]!;
        const cj = columns[j]!;
        for (let p = 0; p < rows; p++) sum += ci[p]! * cj[p]!;
        gram[i * small + j] = gram[j * small + i] = sum;
      }
    }
  }
  return symmetricEigenvalues(gram, small).map((lambda) => Math.sqrt(Math.max(lambda, 0)));
}

/** min over rank-r B·A of ‖M − B·A‖_F (Eckart–Young): the tail energy of the singular values. */
export function optimalLowRankError(singular: Float64Array, rank: number): number {
  if (!Number.isInteger(rank) || rank < 0 || rank > singular.length) {
    throw new InvalidArgumentError(`optimalLowRankError: rank must be an integer in 0..${singular.length}, got ${rank}`);
  }
  let tail = 0;
  for (let i = rank; i < singular.length; i++) tail += singular[i]! * singular[i]!;
  return Math.sqrt(tail);
}
