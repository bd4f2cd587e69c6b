import { checkDenseArray } from "../tensor/matrix.js";
import { applySignConvention } from "./sign-convention.js";
import { completeOrthonormalColumns } from "./orthonormal-completion.js";
import { powerOfTwoScale } from "./power-of-two-scale.js";

/**
 * Exact SVD by one-sided Jacobi rotations in float64 (Hestenes): orthogonalise the columns of A
 * pairwise until no pair has a cosine above machine precision. Slow (O(m·n²) per sweep) but
 * accurate to working precision for every singular value: the oracle the fast SVD is tested against
 * (the fast SVD's own small problems use topEigenpairs).
 *
 * Returns U (m×p), S (p, descending) and V (n×p) with p = min(m, n), row-major, signs fixed by
 * `applySignConvention`.
 */
export interface DenseSvd {
  u: Float64Array;
  s: Float64Array;
  v: Float64Array;
  rows: number;
  cols: number;
  /** min(rows, cols): the number of singular triplets. */
  rank: number;
}

const MAX_SWEEPS = 60;
/** Relative size below which a Jacobi column is float64 rounding noise (the exact σ is 0). */
const NULL_SINGULAR_VALUE = 1e-14;


export function jacobiSvd(input: ArrayLike<number>, rows: number, cols: number): DenseSvd {
  checkDenseArray(input, rows, cols, "jacobiSvd: input");
  if (rows < cols) {
    // SVD of the transpose, with U and V swapped.
    const transposed = new Float64Array(rows * cols);
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) transposed[j * rows + i] = input[i * cols + j]!;
    const t = jacobiSvd(transposed, cols, rows);
    const result = { u: t.v, s: t.s, v: t.u, rows, cols, rank: t.rank };
    applySignConvention(result.u, result.v, rows, result.rank, result.rank);
    return result;
  }
  const m = rows;
  const n = cols;
  // Column-major working copies: a (m×n) and v (n×n). A is scaled by a power of two (exact) so that its
  // largest entry is near 1: the squared column norms of entries near 1e-170 underflow, near 1e160 overflow.
  const scale = powerOfTwoScale(input);
  const a = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) a[j * m + i] = input[i * n + j]! * scale;
  const v = new Float64Array(n * n);
  for (let j = 0; j < n; j++) v[j * n + j] = 1;
  const norms = new Float64Array(n);
  for (let j = 0; j < n; j++) norms[j] = dot(a, j * m, a, j * m, m);
  for (let sweep = 0; sweep < MAX_SWEEPS; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const alpha = norms[p]!;
        const beta = norms[q]!;
        const gamma = dot(a, p * m, a, q * m, m);
        if (gamma === 0 || Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = c * t;
        rotate(a, p * m, q * m, m, c, s);
        rotate(v, p * n, q * n, n, c, s);
        norms[p] = alpha - t * gamma;
        norms[q] = beta + t * gamma;
      }
    }
    // Recompute norms exactly once per sweep so the incremental updates cannot drift.
    for (let j = 0; j < n; j++) norms[j] = dot(a, j * m, a, j * m, m);
    if (!rotated) break;
  }
  const order = Array.from({ length: n }, (_, j) => j).sort((x, y) => norms[y]! - norms[x]!);
  const u = new Float64Array(m * n);
  const s = new Float64Array(n);
  const vOut = new Float64Array(n * n);
  const largest = Math.sqrt(norms[order[0]!] ?? 0);
  const nullColumns: number[] = [];
  order.forEach((source, target) => {
    const sigma = Math.sqrt(norms[source]!);
    s[target] = sigma / scale;
    // A column rotated down to rounding noise has no direction of its own: completed below.
    if (!(sigma > largest * NULL_SINGULAR_VALUE)) nullColumns.push(target);
    else for (let i = 0; i < m; i++) u[i * n + target] = a[source * m + i]! / sigma;
    for (let i = 0; i < n; i++) vOut[i * n + target] = v[source * n + i]!;
  });
  completeOrthonormalColumns(u, m, n, nullColumns);
  applySignConvention(u, vOut, m, n, n);
  return { u, s, v: vOut, rows, cols, rank: n };
}

function dot(x: Float64Array, xOffset: number, y: Float64Array, yOffset: number, length: number): number {
  let sum = 0;
  for (let i = 0; i < length; i++) sum += x[xOffset + i]! * y[yOffset + i]!;
  return sum;
}

function rotate(x: Float64Array, p: number, q: number, length: number, c: number, s: number): void {
  for (let i = 0; i < length; i++) {
    const xp = x[p + i]!;
    const xq = x[q + i]!;
    x[p + i] = c * xp - s * xq;
    x[q + i] = s * xp + c * xq;
  }
}
