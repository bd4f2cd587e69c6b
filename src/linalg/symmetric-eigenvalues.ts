/**
 * All eigenvalues of a dense symmetric matrix (float64): Householder reduction to tridiagonal form,
 * then implicit QR steps with Wilkinson shifts. O(n³) with a small constant and no eigenvectors:
 * the exact reference for singular values (via the Gram matrix) on matrices too large for Jacobi.
 */
export function symmetricEigenvalues(matrix: Float64Array, n: number): Float64Array {
  const a = Float64Array.from(matrix);
  const d = new Float64Array(n);
  const e = new Float64Array(Math.max(n - 1, 0));
  tridiagonalize(a, n, d, e);
  tridiagonalQr(d, e);
  return d.sort((x, y) => y - x);
}

/**
 * The `count` largest eigenvalues (descending) and their unit eigenvectors (n×count, row-major):
 * eigenvalues from the tridiagonal QR, vectors by inverse iteration on the tridiagonal matrix
 * (O(n) per solve), re-orthogonalised against each other and mapped back through the reflectors.
 */
export function topEigenpairs(matrix: Float64Array, n: number, count: number): { values: Float64Array; vectors: Float64Array } {
  const a = Float64Array.from(matrix);
  const d = new Float64Array(n);
  const e = new Float64Array(Math.max(n - 1, 0));
  const reflectors: Array<Float64Array | undefined> = [];
  tridiagonalize(a, n, d, e, reflectors);
  const diagonal = Float64Array.from(d);
  const offDiagonal = Float64Array.from(e);
  tridiagonalQr(d, e);
  const values = d.sort((x, y) => y - x).slice(0, count);
  const scale = Math.max(Math.abs(values[0] ?? 0), Number.MIN_VALUE);
  const found: Float64Array[] = [];
  for (let i = 0; i < count; i++) {
    // Shift a hair off the eigenvalue so the factorisation stays non-singular.
    const x = inverseIteration(diagonal, offDiagonal, values[i]! + scale * 1e-14 * (i + 1), found);
    found.push(x);
  }
  const vectors = new Float64Array(n * count);
  found.forEach((x, j) => {
    // y = H_0 H_1 … H_{n−3} x: apply the reflectors from the last to the first.
    for (let k = reflectors.length - 1; k >= 0; k--) {
      const v = reflectors[k];
      if (!v) continue;
      let dot = 0;
      for (let i = 0; i < v.length; i++) dot += v[i]! * x[k + 1 + i]!;
      dot *= 2;
      for (let i = 0; i < v.length; i++) x[k + 1 + i]! -= dot * v[i]!;
    }
    for (let i = 0; i < n; i++) vectors[i * count + j] = x[i]!;
  });
  return { values, vectors };
}

/** Solves (T − λI)x = b a few times (LU with partial pivoting), orthogonal to `previous`. */
function inverseIteration(d: Float64Array, e: Float64Array, lambda: number, previous: Float64Array[]): Float64Array {
  const n = d.length;
  let x: Float64Array = new Float64Array(n);
  for (let i = 0; i < n; i++) x[i] = 1 + ((i * 7919) % 13) / 13; // deterministic, generic start
  for (let round = 0; round < 4; round++) {
    x = solveShiftedTridiagonal(d, e, lambda, x);
    for (const p of previous) {
      let dot = 0;
      for (let i = 0; i < n; i++) dot += p[i]! * x[i]!;
      for (let i = 0; i < n; i++) x[i]! -= dot * p[i]!;
    }
    let norm = 0;
    for (let i = 0; i < n; i++) norm += x[i]! * x[i]!;
    norm = Math.sqrt(norm) || 1;
    for (let i = 0; i < n; i++) x[i]! /= norm;
  }
  return x;
}

/**
 * Gaussian elimination with partial pivoting on the tridiagonal T − λI (the fill-in stays within
 * a second super-diagonal). Previous eigenvectors are kept in the tridiagonal basis, so
 * orthogonalising there is the same as in the original one (the reflectors are orthogonal).
 */
function solveShiftedTridiagonal(d: Float64Array, e: Float64Array, lambda: number, b: Float64Array): Float64Array {
  const n = d.length;
  const diag = new Float64Array(n);
  const upper1 = new Float64Array(n);
  const upper2 = new Float64Array(n);
  const rhs = Float64Array.from(b);
  for (let i = 0; i < n; i++) diag[i] = d[i]! - lambda;
  for (let i = 0; i < n - 1; i++) upper1[i] = e[i]!;
  const tiny = 1e-300;
  // Row i currently holds (sub = e[i-1] at column i−1 before elimination).
  const sub = new Float64Array(n);
  for (let i = 1; i < n; i++) sub[i] = e[i - 1]!;
  for (let i = 0; i < n - 1; i++) {
    // Eliminate sub[i+1] using rows i and i+1, pivoting if row i+1 has the larger leading entry.
    if (Math.abs(sub[i + 1]!) > Math.abs(diag[i]!)) {
      // Swap rows i and i+1 (row i+1: [sub, diag, upper1] at columns i, i+1, i+2). Row i has no
      // entry beyond column i+2 and row i+1's upper2 is still 0, so it takes row i's.
      const [diagI, upper1I, upper2I, rhsI] = [diag[i]!, upper1[i]!, upper2[i]!, rhs[i]!];
      diag[i] = sub[i + 1]!;
      upper1[i] = diag[i + 1]!;
      upper2[i] = upper1[i + 1]!;
      rhs[i] = rhs[i + 1]!;
      sub[i + 1] = diagI;
      diag[i + 1] = upper1I;
      upper1[i + 1] = upper2I;
      rhs[i + 1] = rhsI;
    }
    const pivot = Math.abs(diag[i]!) < tiny ? tiny : diag[i]!;
    diag[i] = pivot;
    const factor = sub[i + 1]! / pivot;
    diag[i + 1]! -= factor * upper1[i]!;
    upper1[i + 1]! -= factor * upper2[i]!;
    rhs[i + 1]! -= factor * rhs[i]!;
    sub[i + 1] = 0;
  }
  if (Math.abs(diag[n - 1]!) < tiny) diag[n - 1] = tiny;
  const x = new Float64Array(n);
  for (let i = n - 1; i >= 0; i--) {
    let value = rhs[i]!;
    if (i + 1 < n) value -= upper1[i]! * x[i + 1]!;
    if (i + 2 < n) value -= upper2[i]! * x[i + 2]!;
    x[i] = value / diag[i]!;
  }
  return x;
}

function tridiagonalize(a: Float64Array, n: number, d: Float64Array, e: Float64Array, reflectors?: Array<Float64Array | undefined>): void {
  const v = new Float64Array(n);
  const p = new Float64Array(n);
  for (let k = 0; k < n - 2; k++) {
    let norm = 0;
    for (let i = k + 1; i < n; i++) norm += a[i * n + k]! * a[i * n + k]!;
    norm = Math.sqrt(norm);
    d[k] = a[k * n + k]!;
    if (norm === 0) {
      e[k] = 0;
      continue;
    }
    const alpha = a[(k + 1) * n + k]! > 0 ? -norm : norm;
    let vNorm = 0;
    for (let i = k + 1; i < n; i++) {
      v[i] = a[i * n + k]! - (i === k + 1 ? alpha : 0);
      vNorm += v[i]! * v[i]!;
    }
    vNorm = Math.sqrt(vNorm);
    e[k] = alpha;
    if (vNorm === 0) continue;
    for (let i = k + 1; i < n; i++) v[i]! /= vNorm;
    if (reflectors) reflectors[k] = v.slice(k + 1, n);
    // Trailing block A22 ← H A22 H with H = I − 2vvᵀ: p = A22 v, q = p − (vᵀp) v, A22 −= 2(vqᵀ + qvᵀ).
    // Only the lower triangle is read and updated (A22 stays symmetric; everything later reads
    // columns below the diagonal): half the work, with rows walked contiguously — each stored
    // element a_ij (j < i) adds to p_i and, standing in for a_ji, to p_j.
    p.fill(0, k + 1, n);
    for (let i = k + 1; i < n; i++) {
      const row = i * n;
      const vi = v[i]!;
      let sum = a[row + i]! * vi;
      for (let j = k + 1; j < i; j++) {
        const aij = a[row + j]!;
        sum += aij * v[j]!;
        p[j]! += aij * vi;
      }
      p[i]! += sum;
    }
    let vp = 0;
    for (let i = k + 1; i < n; i++) vp += v[i]! * p[i]!;
    for (let i = k + 1; i < n; i++) p[i]! -= vp * v[i]!;
    for (let i = k + 1; i < n; i++) {
      const row = i * n;
      const vi = v[i]!;
      const qi = p[i]!;
      for (let j = k + 1; j <= i; j++) a[row + j]! -= 2 * (vi * p[j]! + qi * v[j]!);
    }
  }
  if (n >= 2) {
    d[n - 2] = a[(n - 2) * n + n - 2]!;
    e[n - 2] = a[(n - 1) * n + n - 2]!;
  }
  if (n >= 1) d[n - 1] = a[(n - 1) * n + n - 1]!;
}

/** Implicit symmetric QR on (d, e) in place; d ends up holding the eigenvalues. */
function tridiagonalQr(d: Float64Array, e: Float64Array): void {
  const n = d.length;
  const small = (i: number) => Math.abs(e[i]!) <= 1e-16 * (Math.abs(d[i]!) + Math.abs(d[i + 1]!));
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
    const delta = (d[high - 1]! - d[high]!) / 2;
    const b2 = e[high - 1]! * e[high - 1]!;
    const shift = d[high]! - b2 / (delta + (delta >= 0 ? 1 : -1) * Math.sqrt(delta * delta + b2));
    let x = d[low]! - shift;
    let z = e[low]!;
    for (let k = low; k < high; k++) {
      const r = Math.hypot(x, z);
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
  let tail = 0;
  for (let i = rank; i < singular.length; i++) tail += singular[i]! * singular[i]!;
  return Math.sqrt(tail);
}
