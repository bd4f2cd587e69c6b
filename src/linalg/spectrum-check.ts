import { OutOfRangeError } from "../errors.js";
import { assertFinite, type Matrix } from "../tensor/matrix.js";

/**
 * Non-finite Rayleigh–Ritz or Gram eigenvalues mean a NaN or ±Inf in the matrix (not scanned for up
 * front: a pass over it per call), named by position; in a finite matrix, float32 products that
 * overflowed (values within a few orders of magnitude of float32's largest). Either way no singular
 * values are returned.
 */
export function checkSpectrum(values: ArrayLike<number>, matrix: Matrix): void {
  for (let i = 0; i < values.length; i++) {
    if (Number.isFinite(values[i]!)) continue;
    assertFinite(matrix, "truncatedSvd: matrix");
    throw new OutOfRangeError(`truncatedSvd: the ${matrix.rows}×${matrix.cols} matrix's products overflow float32 (its values are too close to float32's largest); scale it down`);
  }
}
