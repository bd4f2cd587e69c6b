import { ShapeError } from "../errors.js";
import type { GemmCall } from "./backend.js";

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
