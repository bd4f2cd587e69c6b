import { ShapeError } from "../errors.js";
import type { GemmCall, TransposeCall } from "./backend.js";

/** Validates a subtraction's lengths (out = a − b, or only Σ(a − b)² without out). */
export function checkSubtract(a: Float32Array, b: Float32Array, out: Float32Array | undefined): void {
  if (b.length !== a.length || (out && out.length !== a.length)) throw new ShapeError(`subtract: lengths ${a.length}, ${b.length}${out ? `, ${out.length}` : ""} differ`);
}

/** Validates a transpose call's sizes. */
export function checkTranspose({ a, rows, cols, lda, out }: TransposeCall): void {
  for (const [name, v] of [["rows", rows], ["cols", cols], ["lda", lda]] as const) {
    if (!Number.isInteger(v) || v < 0) throw new ShapeError(`transpose: ${name} must be a non-negative integer, got ${v}`);
  }
  if (lda < cols) throw new ShapeError(`transpose: row stride ${lda} is below the width ${cols}`);
  const needed = rows === 0 || cols === 0 ? 0 : (rows - 1) * lda + cols;
  if (a.length < needed) throw new ShapeError(`transpose: A needs ${needed} values, has ${a.length}`);
  if (out.length < rows * cols) throw new ShapeError(`transpose: out needs ${rows * cols} values, has ${out.length}`);
}

/** Validates the sizes of a gemm call; shared by every backend so they fail identically. */
export function checkGemm({ m, n, k, a, b, c, cIn }: GemmCall): void {
  for (const [name, v] of [["m", m], ["n", n], ["k", k]] as const) {
    if (!Number.isInteger(v) || v < 0) throw new ShapeError(`gemm: ${name} must be a non-negative integer, got ${v}`);
  }
  if (a.length < m * k) throw new ShapeError(`gemm: A needs ${m * k} values, has ${a.length}`);
  if (b.length < k * n) throw new ShapeError(`gemm: B needs ${k * n} values, has ${b.length}`);
  if (c.length < m * n) throw new ShapeError(`gemm: C needs ${m * n} values, has ${c.length}`);
  if (cIn && cIn.length < m * n) throw new ShapeError(`gemm: cIn needs ${m * n} values, has ${cIn.length}`);
}
