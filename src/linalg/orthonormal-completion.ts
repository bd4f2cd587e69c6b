/**
 * Relative size below which a singular value counts as zero: float32 data leaves the singular values
 * of an exactly rank-deficient matrix at ~1e-7 of the largest, and the vectors computed for them as
 * (data · other vector) / σ are then noise, not unit vectors.
 */
export const ZERO_SINGULAR_VALUE = 2 ** -20;

/**
 * Replaces the listed columns of `x` (rows×columns, row-major) by unit vectors orthogonal to every other
 * column and to each other: the singular vectors of zero
 * singular values, which any orthonormal completion represents equally well. Deterministic: candidates
 * are the coordinate vectors e₀, e₁, … in order, each orthogonalised (float64) and taken when at least
 * 0.5/√rows of it survives.
 */
export function completeOrthonormalColumns(x: Float32Array | Float64Array, rows: number, columns: number, replace: readonly number[]): void {
  if (replace.length === 0) return;
  const replaced = new Set(replace);
  const kept: Float64Array[] = [];
  for (let j = 0; j < columns; j++) {
    if (replaced.has(j)) continue;
    const column = new Float64Array(rows);
    for (let i = 0; i < rows; i++) column[i] = x[i * columns + j]!;
    kept.push(column);
  }
  // The coordinate vectors' squared projections onto what is left sum to its dimension (≥ 1): one at
  // least keeps 1/√rows of its norm, so with this threshold the scan never runs out, and the second
  // sweep still leaves it orthogonal to ~1e-16·√rows.
  const threshold = 0.5 / Math.sqrt(rows);
  let candidate = 0;
  for (const j of replace) {
    for (; candidate < rows; candidate++) {
      const vector = new Float64Array(rows);
      vector[candidate] = 1;
      if (!orthogonalize(vector, kept, threshold)) continue;
      kept.push(vector);
      for (let i = 0; i < rows; i++) x[i * columns + j] = vector[i]!;
      candidate++;
      break;
    }
  }
}

/**
 * Sets the singular values that count as zero (see ZERO_SINGULAR_VALUE) to 0 and replaces their
 * columns in every factor (rows×count, row-major) by an orthonormal completion: a matrix of rank
 * below r leaves them zero or noise.
 */
export function completeNullSpace(s: Float64Array, count: number, factors: ReadonlyArray<[Float32Array | Float64Array, number]>): void {
  let largest = 0;
  for (let j = 0; j < count; j++) largest = Math.max(largest, s[j]!);
  const zero: number[] = [];
  for (let j = 0; j < count; j++) if (!(s[j]! > largest * ZERO_SINGULAR_VALUE)) zero.push(j);
  for (const j of zero) s[j] = 0;
  for (const [x, rows] of factors) completeOrthonormalColumns(x, rows, count, zero);
}

/** x ← x − Σ (bᵀx)·b over the unit vectors b, one after another (one classical Gram–Schmidt sweep). */
export function subtractProjections(x: Float64Array, basis: readonly Float64Array[]): void {
  const n = x.length;
  for (const b of basis) {
    let dot = 0;
    for (let i = 0; i < n; i++) dot += b[i]! * x[i]!;
    for (let i = 0; i < n; i++) x[i]! -= dot * b[i]!;
  }
}

/**
 * x made orthogonal to the unit vectors `basis` and normalised, with a second sweep when the first
 * cancelled most of x ("twice is enough"). False, x left unnormalised, when less than `minKept` of its
 * norm survives: what is left is then (close to) rounding noise.
 */
export function orthogonalize(x: Float64Array, basis: readonly Float64Array[], minKept: number): boolean {
  const before = euclideanNorm(x);
  if (!(before > 0) || !Number.isFinite(before)) return false;
  subtractProjections(x, basis);
  let after = euclideanNorm(x);
  if (after < 0.5 * before) {
    subtractProjections(x, basis);
    after = euclideanNorm(x);
  }
  if (!(after > minKept * before)) return false;
  for (let i = 0; i < x.length; i++) x[i]! /= after;
  return true;
}

function euclideanNorm(x: Float64Array): number {
  let sum = 0;
  for (let i = 0; i < x.length; i++) sum += x[i]! * x[i]!;
  return Math.sqrt(sum);
}
