import type { KernelBackend } from "../kernels/backend.js";
import { householderQr } from "./householder-qr.js";

/**
 * Largest estimated condition number for which one CholeskyQR round suffices. The diagonal ratio
 * can underestimate κ by a modest factor; even at 100× that, κ²·2⁻⁵³ stays below 1e-8.
 */
export const SINGLE_ROUND_MAX_CONDITION = 100;
/**
 * Largest Cholesky-factor diagonal ratio for which the float32-Gram CholeskyQR2 on the backend is
 * used (see backendCholeskyQr2).
 */
export const FLOAT32_GRAM_MAX_CONDITION = 30;

/**
 * A column that keeps less than this fraction of its norm through the projection onto the earlier
 * blocks' complement lay in their span: what is left of it is float32 rounding noise, and normalising
 * that noise would give a "direction" that still lies in the span (a repeated basis vector, which
 * inflates the Ritz values by up to √(number of blocks)). It is replaced by a random direction.
 * Measured: collapsed columns keep ≤ 5e-8 (512 and 4096 rows); genuine new directions keep ≥ 1e-4 even
 * under a dominant singular value (most of a column's norm is then leakage along σ₁: a threshold of 1e-3
 * discarded them and lost a quarter of the non-leading energy) and ≥ 6e-4 in LoftQ's warm SVDs. Two
 * projection rounds leave such columns orthogonal to float32 precision ("twice is enough").
 */
export const COLLAPSED_COLUMN_FRACTION = 1e-5;
/** Random redraws of collapsed columns before the column-by-column float64 path takes over. */
const MAX_REDRAWS = 2;

/**
 * Orthonormalises a thin rows×cols block X in place, first against `previous` orthonormal blocks
 * (two rounds of block classical Gram–Schmidt: X −= P·(Pᵀ·X), the products on the backend; columns
 * that collapse, i.e. lay in the earlier span, are redrawn from `gaussian` and projected again) and
 * then within itself: CholeskyQR2 with the products on the backend in float32 when the block is well
 * conditioned, else CholeskyQR in float64 JS (X ← X·L⁻ᵀ; a second round when the block is
 * ill-conditioned). A block that is rank-deficient within itself (its Gram matrix not numerically
 * positive definite) goes to Householder when it is the first, else to a column-by-column float64
 * Gram–Schmidt against the earlier blocks that redraws dependent columns.
 * O(rows·cols²) JS work instead of a Householder QR of the whole Krylov basis.
 */
export function orthonormalizeBlock(x: Float32Array, rows: number, cols: number, previous: readonly Float32Array[], backend: KernelBackend, gaussian: () => number): void {
  if (previous.length > 0) {
    const before = columnNorms(x, rows, cols);
    projectOut(x, rows, cols, previous, backend);
    for (let redraw = 0; ; redraw++) {
      const after = columnNorms(x, rows, cols);
      const collapsed = [...after.keys()].filter((j) => !(after[j]! > COLLAPSED_COLUMN_FRACTION * before[j]!));
      if (collapsed.length === 0) break;
      if (redraw === MAX_REDRAWS) return orthonormalizeColumns(x, rows, cols, previous, gaussian);
      // Redrawn at the size of the largest surviving column: a column far larger or smaller than the
      // rest would look ill-conditioned to CholeskyQR and send the block down the slow float64 path.
      const survivors = after.filter((_, j) => !collapsed.includes(j));
      const size = survivors.length > 0 ? Math.max(...survivors) : 1;
      for (const j of collapsed) {
        let squares = 0;
        for (let i = 0; i < rows; i++) squares += (x[i * cols + j] = gaussian()) ** 2;
        const scale = size / Math.sqrt(squares);
        for (let i = 0; i < rows; i++) x[i * cols + j]! *= scale;
        before[j] = size;
      }
      projectOut(x, rows, cols, previous, backend);
    }
  }
  if (backendCholeskyQr2(x, rows, cols, backend)) return;
  // CholeskyQR on a column-major float64 copy: the Gram products and the triangular solve become
  // dot products and axpys over contiguous columns (several times faster in JS than row-wise).
  const columns = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) columns[j * rows + i] = x[i * cols + j]!;
  for (let round = 0; round < 2; round++) {
    const conditionEstimate = choleskyOrthonormalize(columns, rows, cols);
    if (conditionEstimate === undefined) {
      // Householder completes a rank-deficient block with arbitrary orthonormal directions: right for
      // the first block, but after others they could lie in the earlier span.
      if (previous.length > 0) return orthonormalizeColumns(x, rows, cols, previous, gaussian);
      const { q } = householderQr(x, rows, cols);
      for (let i = 0; i < q.length; i++) x[i] = q[i]!;
      return;
    }
    // One float64 CholeskyQR leaves an orthogonality loss of about κ²·2⁻⁵³; below
    // SINGLE_ROUND_MAX_CONDITION that is far under float32 rounding, so the second round only
    // matters for ill-conditioned blocks.
    if (conditionEstimate <= SINGLE_ROUND_MAX_CONDITION) break;
  }
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) x[i * cols + j] = columns[j * rows + i]!;
}

/** Two rounds of block classical Gram–Schmidt against the orthonormal `previous` blocks, on the backend. */
function projectOut(x: Float32Array, rows: number, cols: number, previous: readonly Float32Array[], backend: KernelBackend): void {
  const coefficients = new Float32Array(cols * cols);
  for (let round = 0; round < 2; round++) {
    for (const p of previous) {
      backend.gemm({ transA: true, transB: false, m: cols, n: cols, k: rows, alpha: 1, a: p, b: x, beta: 0, c: coefficients });
      backend.gemm({ transA: false, transB: false, m: rows, n: cols, k: cols, alpha: -1, a: p, b: coefficients, beta: 1, c: x });
    }
  }
}

/** The Euclidean norm of each column of the row-major rows×cols block, accumulated in float64. */
function columnNorms(x: Float32Array, rows: number, cols: number): Float64Array {
  const squares = new Float64Array(cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) squares[j]! += x[i * cols + j]! ** 2;
  return squares.map(Math.sqrt);
}

/**
 * The slow, sure path for blocks whose columns depend on the earlier blocks or on each other: each
 * column in turn, in float64, projected twice against every earlier column (the previous blocks', then
 * this block's finished ones) and normalised; one that keeps less than COLLAPSED_COLUMN_FRACTION of its
 * norm is replaced by a random direction first. O(rows·cols·(previous + 1)·cols) JS work, taken only
 * when the Krylov space stops growing (a matrix whose range the basis already holds).
 */
function orthonormalizeColumns(x: Float32Array, rows: number, cols: number, previous: readonly Float32Array[], gaussian: () => number): void {
  const done: Float64Array[] = [];
  for (const block of previous) {
    for (let j = 0; j < cols; j++) {
      const column = new Float64Array(rows);
      for (let i = 0; i < rows; i++) column[i] = block[i * cols + j]!;
      done.push(column);
    }
  }
  const norm = (v: Float64Array) => Math.sqrt(v.reduce((sum, value) => sum + value * value, 0));
  for (let j = 0; j < cols; j++) {
    const v = new Float64Array(rows);
    for (let i = 0; i < rows; i++) v[i] = x[i * cols + j]!;
    // The earlier span has at most (previous.length + 1)·cols < rows dimensions (the caller's Krylov
    // basis is narrower than the matrix), so a random direction keeps most of its norm: a few draws do.
    for (let draw = 0; ; draw++) {
      const original = norm(v);
      for (let round = 0; round < 2; round++) {
        for (const d of done) {
          let dot = 0;
          for (let i = 0; i < rows; i++) dot += d[i]! * v[i]!;
          for (let i = 0; i < rows; i++) v[i]! -= dot * d[i]!;
        }
      }
      const kept = norm(v);
      if (kept > COLLAPSED_COLUMN_FRACTION * original || draw === 8) {
        for (let i = 0; i < rows; i++) v[i]! /= kept;
        break;
      }
      for (let i = 0; i < rows; i++) v[i] = gaussian();
    }
    done.push(v);
    for (let i = 0; i < rows; i++) x[i * cols + j] = v[i]!;
  }
}

/**
 * CholeskyQR2 with the two O(rows·cols²) products (the Gram matrix XᵀX and X·L⁻ᵀ) on the backend
 * in float32 and only the cols×cols Cholesky factor and its inverse in float64. The float32 Gram
 * costs the first round an orthogonality loss of about κ²·ε₃₂·√rows, which the second round (on a
 * block with κ ≈ 1) removes, so this path is taken only when the first Cholesky factor says κ ≤
 * FLOAT32_GRAM_MAX_CONDITION. Returns false when the float64 path must finish: with X untouched
 * when the first round was refused, with X once orthonormalized (never worse conditioned) when the
 * second was.
 */
function backendCholeskyQr2(x: Float32Array, rows: number, cols: number, backend: KernelBackend): boolean {
  const gram = new Float32Array(cols * cols);
  const inverse = new Float32Array(cols * cols);
  const product = backend.allocate(rows * cols, false);
  try {
    for (let round = 0; round < 2; round++) {
      backend.gemm({ transA: true, transB: false, m: cols, n: cols, k: rows, alpha: 1, a: x, b: x, beta: 0, c: gram });
      const conditionEstimate = inverseCholeskyTranspose(gram, cols, inverse);
      if (conditionEstimate === undefined || conditionEstimate > FLOAT32_GRAM_MAX_CONDITION) return false;
      backend.gemm({ transA: false, transB: false, m: rows, n: cols, k: cols, alpha: 1, a: x, b: inverse, beta: 0, c: product });
      x.set(product);
    }
    return true;
  } finally {
    backend.release(product);
  }
}

/**
 * L⁻ᵀ (upper triangular, row-major float32) for the Cholesky factor L of the symmetric positive
 * definite `gram` (read from its lower triangle), computed in float64. Returns the factor's
 * diagonal ratio (a lower estimate of κ of the block), or undefined when Cholesky breaks down.
 */
function inverseCholeskyTranspose(gram: Float32Array, cols: number, out: Float32Array): number | undefined {
  const factor = new Float64Array(cols * cols);
  // A float32 Gram matrix is only good to ~1e-7 relative: smaller pivots are noise.
  const conditionEstimate = choleskyFactor(gram, cols, factor, 1e-10);
  if (conditionEstimate === undefined) return undefined;
  // Column j of L⁻¹ by forward substitution; L⁻ᵀ[j][i] = L⁻¹[i][j].
  const column = new Float64Array(cols);
  out.fill(0);
  for (let j = 0; j < cols; j++) {
    column.fill(0);
    column[j] = 1 / factor[j * cols + j]!;
    for (let i = j + 1; i < cols; i++) {
      let sum = 0;
      for (let p = j; p < i; p++) sum += factor[i * cols + p]! * column[p]!;
      column[i] = -sum / factor[i * cols + i]!;
    }
    for (let i = j; i < cols; i++) out[j * cols + i] = column[i]!;
  }
  return conditionEstimate;
}

/**
 * The Cholesky factor L (lower, row-major float64) of the symmetric positive definite matrix whose
 * lower triangle is in `gram`; `out` may be `gram` itself. Returns L's diagonal ratio max/min (a
 * lower estimate of κ of the block this is the Gram matrix of), or undefined when a pivot is at most
 * `floor`·trace (not numerically positive definite).
 */
function choleskyFactor(gram: Float32Array | Float64Array, cols: number, out: Float64Array, floor: number): number | undefined {
  let trace = 0;
  for (let p = 0; p < cols; p++) trace += gram[p * cols + p]!;
  let smallest = Infinity;
  let largest = 0;
  for (let j = 0; j < cols; j++) {
    let diagonal: number = gram[j * cols + j]!;
    for (let p = 0; p < j; p++) diagonal -= out[j * cols + p]! ** 2;
    if (!(diagonal > floor * trace)) return undefined;
    const root = Math.sqrt(diagonal);
    smallest = Math.min(smallest, root);
    largest = Math.max(largest, root);
    out[j * cols + j] = root;
    for (let i = j + 1; i < cols; i++) {
      let sum: number = gram[i * cols + j]!;
      for (let p = 0; p < j; p++) sum -= out[i * cols + p]! * out[j * cols + p]!;
      out[i * cols + j] = sum / root;
    }
  }
  return largest / smallest;
}

/**
 * One CholeskyQR pass over column-major X (rows × cols) in place. Returns max/min of the Cholesky
 * factor's diagonal, a lower estimate of κ(X), or undefined when Cholesky breaks down.
 */
function choleskyOrthonormalize(columns: Float64Array, rows: number, cols: number): number | undefined {
  const gram = new Float64Array(cols * cols);
  for (let p = 0; p < cols; p++) {
    const a = p * rows;
    let q = 0;
    // Four columns against column p at once: each load of column p serves four dot products (2× the
    // one-at-a-time loop), and the four sums are independent chains for the add latency.
    for (; q + 3 <= p; q += 4) {
      const b0 = q * rows, b1 = b0 + rows, b2 = b1 + rows, b3 = b2 + rows;
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let i = 0; i < rows; i++) {
        const x = columns[a + i]!;
        s0 += x * columns[b0 + i]!;
        s1 += x * columns[b1 + i]!;
        s2 += x * columns[b2 + i]!;
        s3 += x * columns[b3 + i]!;
      }
      gram[p * cols + q] = s0;
      gram[p * cols + q + 1] = s1;
      gram[p * cols + q + 2] = s2;
      gram[p * cols + q + 3] = s3;
    }
    for (; q <= p; q++) {
      let s0 = 0, s1 = 0;
      const b = q * rows;
      let i = 0;
      for (; i + 2 <= rows; i += 2) {
        s0 += columns[a + i]! * columns[b + i]!;
        s1 += columns[a + i + 1]! * columns[b + i + 1]!;
      }
      for (; i < rows; i++) s0 += columns[a + i]! * columns[b + i]!;
      gram[p * cols + q] = s0 + s1;
    }
  }
  // gram = L·Lᵀ (lower L, in place).
  const conditionEstimate = choleskyFactor(gram, cols, gram, 1e-12);
  if (conditionEstimate === undefined) return undefined;
  // X ← X·L⁻ᵀ, column by column: x_j = (x_j − Σ_{p<j} L[j,p]·y_p) / L[j,j], the y_p already solved.
  // Four solved columns per sweep over x_j: a quarter of the loads and stores of x_j.
  for (let j = 0; j < cols; j++) {
    const target = j * rows;
    let p = 0;
    for (; p + 4 <= j; p += 4) {
      const f0 = gram[j * cols + p]!, f1 = gram[j * cols + p + 1]!, f2 = gram[j * cols + p + 2]!, f3 = gram[j * cols + p + 3]!;
      const y0 = p * rows, y1 = y0 + rows, y2 = y1 + rows, y3 = y2 + rows;
      for (let i = 0; i < rows; i++) {
        columns[target + i]! -= f0 * columns[y0 + i]! + f1 * columns[y1 + i]! + f2 * columns[y2 + i]! + f3 * columns[y3 + i]!;
      }
    }
    for (; p < j; p++) {
      const factor = gram[j * cols + p]!;
      for (let i = 0, source = p * rows; i < rows; i++) columns[target + i]! -= factor * columns[source + i]!;
    }
    const inverse = 1 / gram[j * cols + j]!;
    for (let i = 0; i < rows; i++) columns[target + i]! *= inverse;
  }
  return conditionEstimate;
}
