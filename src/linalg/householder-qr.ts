import { ShapeError } from "../errors.js";
import { checkDenseArray } from "../tensor/matrix.js";
import { powerOfTwoScale } from "./power-of-two-scale.js";

/**
 * Thin QR by Householder reflections, computed in float64: for a rows×cols input (rows ≥ cols,
 * row-major) returns the orthonormal rows×cols factor Q and the cols×cols upper-triangular R.
 * Stable even when the columns are nearly dependent, which randomized range finders produce.
 */
export interface ThinQr {
  /** rows×cols, row-major, orthonormal columns. */
  q: Float64Array;
  /** cols×cols upper triangular, row-major. */
  r: Float64Array;
}

export function householderQr(input: ArrayLike<number>, rows: number, cols: number): ThinQr {
  // Shape only: a non-finite value gives a non-finite factor, which the randomized SVD (its caller
  // inside the library) turns into its own OutOfRangeError.
  checkDenseArray(input, rows, cols, "householderQr: input", false);
  if (rows < cols) throw new ShapeError(`householderQr: a thin QR needs rows ≥ cols, got ${rows}×${cols}`);
  // Work column-major so each reflector touches contiguous memory, scaled by a power of two (exact) so
  // that the column norms neither underflow (entries near 1e-170) nor overflow (near 1e160).
  const scale = powerOfTwoScale(input);
  const a = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) a[j * rows + i] = input[i * cols + j]! * scale;
  const reflectors: Float64Array[] = [];
  const r = new Float64Array(cols * cols);
  for (let k = 0; k < cols; k++) {
    const column = k * rows;
    let norm = 0;
    for (let i = k; i < rows; i++) norm += a[column + i]! * a[column + i]!;
    norm = Math.sqrt(norm);
    const v = new Float64Array(rows - k);
    if (norm > 0) {
      const alpha = a[column + k]! > 0 ? -norm : norm;
      for (let i = k; i < rows; i++) v[i - k] = a[column + i]!;
      v[0]! -= alpha;
      let vNorm = 0;
      for (let i = 0; i < v.length; i++) vNorm += v[i]! * v[i]!;
      vNorm = Math.sqrt(vNorm);
      if (vNorm > 0) for (let i = 0; i < v.length; i++) v[i]! /= vNorm;
      // Apply H = I − 2vvᵀ to the remaining columns.
      for (let j = k; j < cols; j++) {
        const col = j * rows + k;
        let dot = 0;
        for (let i = 0; i < v.length; i++) dot += v[i]! * a[col + i]!;
        dot *= 2;
        for (let i = 0; i < v.length; i++) a[col + i]! -= dot * v[i]!;
      }
    }
    reflectors.push(v);
    for (let j = k; j < cols; j++) r[k * cols + j] = a[j * rows + k]! / scale;
  }
  // Q = H_0 H_1 … H_{cols−1} applied to the first `cols` columns of the identity, column-major.
  const qColumns = new Float64Array(rows * cols);
  for (let j = 0; j < cols; j++) qColumns[j * rows + j] = 1;
  for (let k = cols - 1; k >= 0; k--) {
    const v = reflectors[k]!;
    for (let j = 0; j < cols; j++) {
      const col = j * rows + k;
      let dot = 0;
      for (let i = 0; i < v.length; i++) dot += v[i]! * qColumns[col + i]!;
      if (dot === 0) continue;
      dot *= 2;
      for (let i = 0; i < v.length; i++) qColumns[col + i]! -= dot * v[i]!;
    }
  }
  const q = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) q[i * cols + j] = qColumns[j * rows + i]!;
  return { q, r };
}
