import { test, after } from "node:test";
import assert from "node:assert/strict";
import type { KernelBackend } from "./backend.js";
import { tsBackend } from "./ts-backend.js";
import { createWasmBackend, wasmSimdSupported } from "./wasm-backend.js";
import { createThreadedBackend } from "../node/threaded-backend.js";
import { gaussianArray, mulberry32 } from "../linalg/random.js";

/** One suite over every backend, each compared with the plain-TS reference (max |Δ| printed). */
const threaded = wasmSimdSupported() ? createThreadedBackend(2) : undefined;
after(() => threaded?.terminate());
const backends: KernelBackend[] = [tsBackend, ...(wasmSimdSupported() ? [createWasmBackend(), threaded!] : [])];

const SHAPES: Array<[number, number, number]> = [
  [0, 3, 4], [3, 0, 4], [2, 3, 0], [1, 1, 1], [3, 5, 7], [17, 33, 9], [64, 64, 64], [130, 70, 50], [5, 700, 300], [2000, 24, 1500],
];

for (const backend of backends) {
  test(`gemm on "${backend.name}" matches the reference in every transpose case`, (t) => {
    const random = mulberry32(17);
    for (const [m, n, k] of SHAPES) {
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          for (const fromBackend of [false, true]) {
            const make = (length: number) => {
              const array = fromBackend ? backend.allocate(length) : new Float32Array(length);
              return gaussianArray(length, random, array);
            };
            const a = make(m * k);
            const b = make(k * n);
            const c = make(m * n);
            const expected = Float32Array.from(c);
            const alpha = 0.75;
            const beta = m === 17 ? 0 : -0.5;
            if (beta === 0) c.fill(NaN); // beta = 0 must ignore C entirely
            tsBackend.gemm({ transA, transB, m, n, k, alpha, a, b, beta, c: expected });
            backend.gemm({ transA, transB, m, n, k, alpha, a, b, beta, c });
            let diff = 0;
            for (let i = 0; i < expected.length; i++) diff = Math.max(diff, Math.abs(expected[i]! - c[i]!));
            if (!fromBackend) t.diagnostic(`${m}×${n}×${k} transA=${transA} transB=${transB}: max |Δ| ${diff.toExponential(2)}`);
            assert.ok(diff <= 2e-6 * Math.max(1, k), `${backend.name} ${m}×${n}×${k} ${transA}/${transB}: ${diff}`);
            if (fromBackend) for (const array of [a, b, c]) backend.release(array);
          }
        }
      }
    }
  });
}

test("gemm rejects arrays too short for the shape, on every backend", () => {
  for (const backend of backends) {
    assert.throws(() => backend.gemm({ transA: false, transB: false, m: 2, n: 2, k: 2, alpha: 1, a: new Float32Array(3), b: new Float32Array(4), beta: 0, c: new Float32Array(4) }), { name: "ShapeError" });
  }
});
