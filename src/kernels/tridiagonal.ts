import { ShapeError } from "../errors.js";
import type { ReflectorsCall, TridiagonalizeCall } from "./backend.js";

/**
 * Reference kernels of the symmetric eigensolver's two O(n³) steps (float64, plain TS): Householder
 * reduction to tridiagonal form, and applying its reflectors to eigenvectors of the tridiagonal
 * matrix. The WebAssembly versions (assembly/simd-kernels.ts) do the same arithmetic in f64x2 lanes.
 */

export function checkTridiagonalizeCall({ a, n, d, e, reflectors }: TridiagonalizeCall): void {
  if (!Number.isInteger(n) || n < 0 || a.length < n * n || d.length < n || e.length < Math.max(n - 1, 0) || (reflectors && reflectors.length < n * n)) {
    throw new ShapeError(`tridiagonalize: arrays too short for n = ${n}`);
  }
}

export function checkReflectorsCall({ reflectors, n, x, count }: ReflectorsCall): void {
  if (!Number.isInteger(n) || !Number.isInteger(count) || n < 0 || count < 0 || reflectors.length < n * n || x.length < n * count) {
    throw new ShapeError(`applyReflectors: arrays too short for n = ${n}, count = ${count}`);
  }
}

/**
 * Q·A·Qᵀ = T with Q = H_{n−3}…H_0, H_k = I − 2·v_k·v_kᵀ zero outside rows/columns k+1…n−1. Reads and
 * updates only the lower triangle of `a` (it stays symmetric; everything later reads columns below
 * the diagonal): half the work, with rows walked contiguously.
 */
export function tridiagonalizeReference(call: TridiagonalizeCall): void {
  checkTridiagonalizeCall(call);
  const { a, n, d, e } = call;
  // Without an output for them, every reflector goes through one row of scratch.
  const keep = call.reflectors !== undefined;
  const reflectors = call.reflectors ?? new Float64Array(n);
  if (keep) reflectors.fill(0, 0, n * n);
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
    // v (unit) in row k of `reflectors`, columns k+1…n−1.
    const v = keep ? k * n : 0;
    let vNorm = 0;
    for (let i = k + 1; i < n; i++) {
      const value = a[i * n + k]! - (i === k + 1 ? alpha : 0);
      reflectors[v + i] = value;
      vNorm += value * value;
    }
    vNorm = Math.sqrt(vNorm);
    e[k] = alpha;
    if (vNorm === 0) {
      reflectors.fill(0, v + k + 1, v + n);
      continue;
    }
    for (let i = k + 1; i < n; i++) reflectors[v + i]! /= vNorm;
    // A22 ← H A22 H: p = A22 v, q = p − (vᵀp) v, A22 −= 2(vqᵀ + qvᵀ). Each stored a_ij (j < i) adds to
    // p_i and, standing in for a_ji, to p_j.
    p.fill(0, k + 1, n);
    for (let i = k + 1; i < n; i++) {
      const row = i * n;
      const vi = reflectors[v + i]!;
      let sum = a[row + i]! * vi;
      for (let j = k + 1; j < i; j++) {
        const aij = a[row + j]!;
        sum += aij * reflectors[v + j]!;
        p[j]! += aij * vi;
      }
      p[i]! += sum;
    }
    let vp = 0;
    for (let i = k + 1; i < n; i++) vp += reflectors[v + i]! * p[i]!;
    for (let i = k + 1; i < n; i++) p[i]! -= vp * reflectors[v + i]!;
    for (let i = k + 1; i < n; i++) {
      const row = i * n;
      const vi = reflectors[v + i]!;
      const qi = p[i]!;
      for (let j = k + 1; j <= i; j++) a[row + j]! -= 2 * (vi * p[j]! + qi * reflectors[v + j]!);
    }
  }
  if (n >= 2) {
    d[n - 2] = a[(n - 2) * n + n - 2]!;
    e[n - 2] = a[(n - 1) * n + n - 2]!;
  }
  if (n >= 1) d[n - 1] = a[(n - 1) * n + n - 1]!;
}

/** x ← H_0 H_1 … H_{n−3} x for every column of x (n×count, row-major): the last reflector first. */
export function applyReflectorsReference(call: ReflectorsCall): void {
  checkReflectorsCall(call);
  const { reflectors, n, x, count } = call;
  const dots = new Float64Array(count);
  for (let k = n - 3; k >= 0; k--) {
    const v = k * n;
    dots.fill(0);
    for (let i = k + 1; i < n; i++) {
      const vi = reflectors[v + i]!;
      for (let j = 0; j < count; j++) dots[j]! += vi * x[i * count + j]!;
    }
    for (let i = k + 1; i < n; i++) {
      const scaled = 2 * reflectors[v + i]!;
      for (let j = 0; j < count; j++) x[i * count + j]! -= scaled * dots[j]!;
    }
  }
}
