/** Relative closeness to the largest magnitude within which entries tie (float32 rounding is ~6e-8). */
export const SIGN_TIE_TOLERANCE = 1e-5;

/**
 * SVD signs are arbitrary: (u_j, v_j) and (−u_j, −v_j) are equally valid. We fix them so results
 * are reproducible: the largest-magnitude entry of every left singular vector u_j is positive
 * (the first such entry on ties), and v_j flips with it. Entries within SIGN_TIE_TOLERANCE of the
 * largest count as tied: backends round in the last bits differently, and rows of opposite sign and
 * nearly equal size (±v) must not pick a different winner on each.
 *
 * `u` is rows×ldu-strided (row-major, `components` used columns), `v` is n×components row-major
 * with the same stride as its row length; both are flipped in place.
 */
export function applySignConvention(u: Float64Array | Float32Array, v: Float64Array | Float32Array, uRows: number, stride: number, components: number): void {
  const vRows = v.length / stride;
  for (let j = 0; j < components; j++) {
    let best = 0;
    for (let i = 0; i < uRows; i++) best = Math.max(best, Math.abs(u[i * stride + j]!));
    let first = 0;
    while (first < uRows && Math.abs(u[first * stride + j]!) < best * (1 - SIGN_TIE_TOLERANCE)) first++;
    if (u[first * stride + j]! >= 0) continue;
    for (let i = 0; i < uRows; i++) u[i * stride + j] = -u[i * stride + j]!;
    for (let i = 0; i < vRows; i++) v[i * stride + j] = -v[i * stride + j]!;
  }
}
